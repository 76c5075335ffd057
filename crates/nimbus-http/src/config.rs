//! The server's configuration: where it listens, and the bounds of what it keeps.

use std::net::SocketAddr;

use nimbus_core::ConfigError;

use crate::auth::Credentials;
use crate::gateway::ApiKeys;

/// Where the server listens and what it may keep in memory.
///
/// ```
/// use nimbus_http::HttpConfig;
///
/// let config = HttpConfig::default().with_retry_memory(0);
/// assert_eq!(config.validate().unwrap_err().field, "retry_memory_bytes");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The address to listen on (default `127.0.0.1:9001`; port 0 picks a free port).
    pub bind: SocketAddr,
    /// Whether `bind` may be other than a loopback address. Without [`credentials`]
    /// requests are not authenticated, so anyone who can reach the port can invoke every
    /// function: off by default, and a warning is logged when it is on.
    ///
    /// [`credentials`]: HttpConfig::credentials
    pub allow_non_loopback: bool,
    /// The access keys of SigV4-signed callers (default none: every request acts as the
    /// host, unchecked). With credentials, the Lambda API verifies signatures and invokes as
    /// the signer's identity, or as `Anonymous` when unsigned (see [`Credentials`]).
    pub credentials: Option<Credentials>,
    /// The API keys of gateway routes with [`RouteAuth::ApiKey`](crate::RouteAuth::ApiKey)
    /// (default none: such routes refuse every request). Routes with
    /// [`RouteAuth::AwsIam`](crate::RouteAuth::AwsIam) check signatures with `credentials`.
    pub api_keys: ApiKeys,
    /// The memory kept for SDK retries: outcomes of finished invocations, so that a retried
    /// request gets the same answer instead of running the function again (default 16 MiB;
    /// the oldest are evicted first).
    pub retry_memory_bytes: usize,
    /// The largest request body the gateway accepts (default 10 MB, API Gateway's payload
    /// limit); larger requests get 413.
    pub gateway_max_request_bytes: usize,
}

/// The default listening address: loopback, the port SAM's local Lambda endpoint uses + 1.
pub const DEFAULT_BIND: &str = "127.0.0.1:9001";

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND.parse().expect("a valid socket address"),
            allow_non_loopback: false,
            credentials: None,
            api_keys: ApiKeys::new(),
            retry_memory_bytes: 16 << 20,
            gateway_max_request_bytes: 10 * 1024 * 1024,
        }
    }
}

impl HttpConfig {
    /// Sets the listening address.
    #[must_use]
    pub fn with_bind(mut self, bind: SocketAddr) -> Self {
        self.bind = bind;
        self
    }

    /// Allows a non-loopback listening address (see [`HttpConfig::allow_non_loopback`]).
    #[must_use]
    pub fn allow_non_loopback(mut self) -> Self {
        self.allow_non_loopback = true;
        self
    }

    /// Authenticates the Lambda API's callers with `credentials` (see [`Credentials`]).
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sets the API keys of gateway routes with [`RouteAuth::ApiKey`](crate::RouteAuth::ApiKey)
    /// (see [`ApiKeys`]).
    #[must_use]
    pub fn with_api_keys(mut self, api_keys: ApiKeys) -> Self {
        self.api_keys = api_keys;
        self
    }

    /// Sets the memory kept for SDK retries, in bytes.
    #[must_use]
    pub fn with_retry_memory(mut self, bytes: usize) -> Self {
        self.retry_memory_bytes = bytes;
        self
    }

    /// Sets the gateway's request size limit, in bytes.
    #[must_use]
    pub fn with_gateway_max_request(mut self, bytes: usize) -> Self {
        self.gateway_max_request_bytes = bytes;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// The first invalid field, with the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.bind.ip().is_loopback() && !self.allow_non_loopback {
            return Err(ConfigError::new(
                "http",
                "bind",
                self.bind,
                "a loopback address, unless allow_non_loopback is set (requests are not authenticated)",
            ));
        }
        if let Some(credentials) = &self.credentials {
            credentials.validate()?;
        }
        self.api_keys.validate()?;
        if !(1..=1 << 34).contains(&self.retry_memory_bytes) {
            return Err(ConfigError::new(
                "http",
                "retry_memory_bytes",
                self.retry_memory_bytes,
                "1 byte to 16 GiB",
            ));
        }
        if !(1..=1 << 30).contains(&self.gateway_max_request_bytes) {
            return Err(ConfigError::new(
                "http",
                "gateway_max_request_bytes",
                self.gateway_max_request_bytes,
                "1 byte to 1 GiB",
            ));
        }
        Ok(())
    }
}
