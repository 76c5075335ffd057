//! The API gateway: HTTP routes to functions, as API Gateway's Lambda proxy integration.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use nimbus_core::ConfigError;

use crate::server::AppState;

/// The event shape a route sends its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PayloadVersion {
    /// REST API's proxy event (payload format 1.0).
    V1,
    /// HTTP API's proxy event (payload format 2.0), the default.
    #[default]
    V2,
}

/// A route: a method (or `ANY`) and a path template to a function.
#[derive(Debug, Clone)]
pub struct Route {
    method: Option<http::Method>,
    path: String,
    function: String,
    payload: PayloadVersion,
}

impl Route {
    /// A route from `method` (`GET`, `POST`, ..., or `ANY`) and `path` (`/orders/{id}`,
    /// `/files/{proxy+}`) to `function`, with payload 2.0.
    ///
    /// # Errors
    ///
    /// An unknown method or a malformed path template.
    pub fn new(method: &str, path: &str, function: impl Into<String>) -> Result<Self, ConfigError> {
        let method = if method.eq_ignore_ascii_case("ANY") {
            None
        } else {
            Some(
                http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    ConfigError::new("route", "method", method, "an HTTP method or ANY")
                })?,
            )
        };
        Ok(Self {
            method,
            path: path.to_owned(),
            function: function.into(),
            payload: PayloadVersion::V2,
        })
    }

    /// The method, or `None` for `ANY`.
    pub fn method(&self) -> Option<&http::Method> {
        self.method.as_ref()
    }

    /// The path template.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The function the route invokes.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Sets the payload version.
    #[must_use]
    pub fn with_payload(mut self, payload: PayloadVersion) -> Self {
        self.payload = payload;
        self
    }
}

/// The routes, matched per request.
pub(crate) struct Gateway {
    routes: Vec<Route>,
    max_request_bytes: usize,
}

impl Gateway {
    pub(crate) fn new(routes: Vec<Route>, max_request_bytes: usize) -> Result<Self, ConfigError> {
        Ok(Self {
            routes,
            max_request_bytes,
        })
    }
}

/// Answers a request outside the Invoke API's paths.
pub(crate) async fn serve(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let _ = (
        &state.gateway.routes,
        state.gateway.max_request_bytes,
        request,
    );
    (
        http::StatusCode::NOT_FOUND,
        [(http::header::CONTENT_TYPE, "application/json")],
        r#"{"message":"Not Found"}"#,
    )
        .into_response()
}
