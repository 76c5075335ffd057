//! A route: a method (or `ANY`) and a path template to a function, with its payload version,
//! its authorization and optional throttle.

use nimbus_core::ConfigError;

use super::auth::RouteAuth;
use super::template::{Specificity, Template};
use super::throttle::ThrottleSettings;

/// Decoded path parameters, `(name, value)` in template order.
pub(crate) type PathParameters = Vec<(String, String)>;

/// How well a route matches a request: its path's specificity, then 0 for its own method
/// and 1 for `ANY`. Smaller is better.
pub(crate) type Rank<'a> = (Specificity<'a>, u8);

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
///
/// ```
/// use nimbus_http::{PayloadVersion, Route};
///
/// let route = Route::new("GET", "/orders/{id}", "orders")?.with_payload(PayloadVersion::V1);
/// assert_eq!(route.path(), "/orders/{id}");
/// assert_eq!(Route::new("GET", "/files/{proxy+}/x", "f").unwrap_err().field, "path");
/// # Ok::<(), nimbus_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Route {
    method: Option<http::Method>,
    path: String,
    template: Template,
    function: String,
    payload: PayloadVersion,
    auth: RouteAuth,
    throttle: Option<ThrottleSettings>,
    /// `GET /orders/{id}`, formatted once: every event carries it.
    key: String,
}

impl Route {
    /// A route from `method` (`GET`, `POST`, ..., or `ANY`) and `path` (`/orders/{id}`,
    /// `/files/{proxy+}`) to `function`, with payload 2.0, open to anyone.
    ///
    /// # Errors
    ///
    /// An unknown method, a malformed path template (segments are literals, `{name}`, or a
    /// greedy `{name+}` as the last one), or an empty function name.
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
        let template = Template::parse(path)?;
        let function = function.into();
        if function.is_empty() {
            return Err(ConfigError::new(
                "route",
                "function",
                function,
                "the name of a registered function",
            ));
        }
        let key = format!(
            "{} {path}",
            method.as_ref().map_or("ANY", http::Method::as_str)
        );
        Ok(Self {
            key,
            method,
            path: path.to_owned(),
            template,
            function,
            payload: PayloadVersion::V2,
            auth: RouteAuth::None,
            throttle: None,
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

    /// The payload version.
    pub fn payload(&self) -> PayloadVersion {
        self.payload
    }

    /// Sets the payload version.
    #[must_use]
    pub fn with_payload(mut self, payload: PayloadVersion) -> Self {
        self.payload = payload;
        self
    }

    /// Who may call the route (see [`RouteAuth`]; default [`RouteAuth::None`]: anyone, the
    /// function invoked as the host).
    #[must_use]
    pub fn with_auth(mut self, auth: RouteAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Who may call the route.
    pub fn auth(&self) -> RouteAuth {
        self.auth
    }

    /// Throttles the route as API Gateway does: a token bucket of `burst` requests refilled
    /// at `rate_per_second`, continuously; a request that finds it empty gets 429 with
    /// `Retry-After`. Both must be at least 1 (checked when the server is built).
    #[must_use]
    pub fn with_throttle(mut self, rate_per_second: u32, burst: u32) -> Self {
        self.throttle = Some(ThrottleSettings {
            rate_per_second,
            burst,
        });
        self
    }

    /// `ANY /x` or `GET /orders/{id}`: the route key of payload 2.0 events.
    pub fn route_key(&self) -> String {
        self.key.clone()
    }

    /// [`Route::route_key`], borrowed.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Checks the settings that builders do not check.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.throttle.map_or(Ok(()), ThrottleSettings::validate)
    }

    pub(crate) fn throttle(&self) -> Option<ThrottleSettings> {
        self.throttle
    }

    /// Whether this route and `other` take the same requests (same method, same paths).
    pub(crate) fn conflicts_with(&self, other: &Self) -> bool {
        self.method == other.method && self.template.same_paths(&other.template)
    }

    /// The decoded path parameters and the route's rank if it takes `method` on `raw_path`;
    /// a smaller rank is the better match.
    pub(crate) fn matches(
        &self,
        method: &http::Method,
        raw_path: &str,
    ) -> Option<(PathParameters, Rank<'_>)> {
        let method_rank = match &self.method {
            None => 1,
            Some(own) if own == method => 0,
            Some(_) => return None,
        };
        let params = self.template.matches(raw_path)?;
        Some((params, (self.template.specificity(), method_rank)))
    }
}
