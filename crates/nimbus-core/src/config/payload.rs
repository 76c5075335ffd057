//! [`PayloadLimits`]: the largest JSON payloads that cross into and out of the runtime, with
//! Lambda's limits as defaults.

use crate::error::ConfigError;

/// The largest JSON payloads, in bytes of their compact serialisation, that a call by name
/// ([`Runtime::invoke_json`](crate::Runtime::invoke_json),
/// [`Runtime::invoke_async_json`](crate::Runtime::invoke_async_json), a handler's
/// [`Context::invoke`](crate::Context::invoke) and `invoke_async`) may carry. Typed calls on
/// a [`FunctionHandle`](crate::FunctionHandle) serialise nothing and are not limited.
///
/// # Example
///
/// ```
/// use nimbus_core::{PayloadLimits, RuntimeConfig};
///
/// let limits = PayloadLimits::default();
/// assert_eq!(limits.sync_request, 6 * 1024 * 1024);
/// assert_eq!(limits.async_request, 1024 * 1024);
/// let config = RuntimeConfig::default().with_payload_limits(limits.with_sync_response(0));
/// assert_eq!(config.validate().unwrap_err().field, "payload_limits.sync_response");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PayloadLimits {
    /// A synchronous invocation's event (default 6 MB, 6,291,456 bytes, as Lambda's).
    pub sync_request: u64,
    /// A synchronous invocation's output (default 6 MB, as Lambda's).
    pub sync_response: u64,
    /// An asynchronous invocation's event (default 1 MB, 1,048,576 bytes: Lambda's limit since
    /// it was raised from 256 KB).
    pub async_request: u64,
}

/// Lambda's synchronous payload limit, each way.
pub const SYNC_PAYLOAD_LIMIT: u64 = 6 * 1024 * 1024;
/// Lambda's asynchronous request limit.
pub const ASYNC_PAYLOAD_LIMIT: u64 = 1024 * 1024;
/// The largest limit accepted: 1 GiB.
const MAX_LIMIT: u64 = 1 << 30;

impl Default for PayloadLimits {
    fn default() -> Self {
        Self {
            sync_request: SYNC_PAYLOAD_LIMIT,
            sync_response: SYNC_PAYLOAD_LIMIT,
            async_request: ASYNC_PAYLOAD_LIMIT,
        }
    }
}

impl PayloadLimits {
    /// Sets the limit of a synchronous invocation's event.
    #[must_use]
    pub fn with_sync_request(mut self, bytes: u64) -> Self {
        self.sync_request = bytes;
        self
    }

    /// Sets the limit of a synchronous invocation's output.
    #[must_use]
    pub fn with_sync_response(mut self, bytes: u64) -> Self {
        self.sync_response = bytes;
        self
    }

    /// Sets the limit of an asynchronous invocation's event.
    #[must_use]
    pub fn with_async_request(mut self, bytes: u64) -> Self {
        self.async_request = bytes;
        self
    }

    /// Checks each limit is within 1 byte..=1 GiB.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first limit out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("payload_limits.sync_request", self.sync_request),
            ("payload_limits.sync_response", self.sync_response),
            ("payload_limits.async_request", self.async_request),
        ] {
            if !(1..=MAX_LIMIT).contains(&value) {
                return Err(ConfigError::new(
                    "runtime",
                    field,
                    value,
                    format!("1..={MAX_LIMIT} bytes"),
                ));
            }
        }
        Ok(())
    }
}
