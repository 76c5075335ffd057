//! What feeds a runtime's functions from outside — event source mappings — and how the runtime
//! stops it: [`Attachment`], attached with [`crate::Runtime::attach`].

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

/// Something that invokes a runtime's functions on its own: an event source mapping (queue,
/// stream, object notifications) or any poller a host writes. Attached to a [`crate::Runtime`],
/// it is stopped by [`crate::Runtime::shutdown`] before the functions it feeds, and by
/// [`crate::Runtime::unregister`] of its function, so that nothing it received is stranded.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_core::{async_trait, Attachment, AttachmentStop, Runtime};
/// use tokio::time::Instant;
///
/// #[derive(Debug)]
/// struct Ticker;
///
/// #[async_trait]
/// impl Attachment for Ticker {
///     fn name(&self) -> &str { "ticker" }
///     fn function(&self) -> &str { "tick" }
///     async fn stop(&self, _deadline: Instant) -> AttachmentStop {
///         AttachmentStop::clean("ticker")
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let runtime = Runtime::default();
/// runtime.attach(Ticker).unwrap();
/// let report = runtime.shutdown(Duration::from_secs(1)).await;
/// assert!(report.attachments[0].clean);
/// # }
/// ```
#[async_trait]
pub trait Attachment: Send + Sync + std::fmt::Debug + 'static {
    /// A name for reports and logs (a mapping's name).
    fn name(&self) -> &str;

    /// The function it invokes; unregistering that function stops it.
    fn function(&self) -> &str;

    /// Stops it: stop receiving, let work in flight finish until `deadline`, then hand what is
    /// left back to its source without counting it as a failed attempt (a queue's messages
    /// released, a stream's checkpoints flushed and leases given up). It must return soon
    /// after `deadline` whatever the source does; the runtime stops waiting
    /// [`ATTACHMENT_STOP_SLACK`] after it.
    async fn stop(&self, deadline: Instant) -> AttachmentStop;
}

/// How long past its deadline the runtime waits for an [`Attachment`] to stop.
pub const ATTACHMENT_STOP_SLACK: Duration = Duration::from_millis(500);

/// How an [`Attachment`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttachmentStop {
    /// The attachment's name.
    pub name: String,
    /// Whether everything it had in hand finished or went back to its source in time.
    pub clean: bool,
    /// Messages or records handed back to the source unhandled.
    pub released: u64,
    /// What went wrong, if it did not stop cleanly.
    pub error: Option<String>,
}

impl AttachmentStop {
    /// A clean stop that released nothing.
    pub fn clean(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            clean: true,
            released: 0,
            error: None,
        }
    }

    /// A stop that did not finish cleanly, with the reason.
    pub fn failed(name: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            clean: false,
            released: 0,
            error: Some(error.into()),
        }
    }

    /// Sets the number of messages or records handed back.
    #[must_use]
    pub fn with_released(mut self, released: u64) -> Self {
        self.released = released;
        self
    }
}
