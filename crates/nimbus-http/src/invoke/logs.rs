//! `X-Amz-Log-Type: Tail`: the last 4 KB of an invocation's log.

use nimbus_core::{RequestId, UsageReport};

/// The log tail Lambda returns: the last 4 KB.
pub const TAIL_BYTES: usize = 4096;

/// Where a function's log tails come from, by request id (a process backend keeps the
/// START … REPORT lines its instances wrote).
pub trait LogSource: Send + Sync + 'static {
    /// The log of the invocation `request_id`, if it is still kept.
    fn tail(&self, request_id: RequestId) -> Option<String>;
}

impl<F> LogSource for F
where
    F: Fn(RequestId) -> Option<String> + Send + Sync + 'static,
{
    fn tail(&self, request_id: RequestId) -> Option<String> {
        self(request_id)
    }
}

/// The lines Lambda writes around every invocation, for a function whose instances write no
/// log of their own (in-process handlers log through `tracing`).
pub(crate) fn framing(report: &UsageReport, error: Option<(&str, &str)>) -> String {
    let id = report.request_id;
    let mut log = format!("START RequestId: {id} Version: $LATEST\n");
    if let Some((error_type, message)) = error {
        log.push_str(&format!("{id}\tERROR\t{error_type}: {message}\n"));
    }
    log.push_str(&format!("END RequestId: {id}\n{report}\n"));
    log
}

/// The last [`TAIL_BYTES`] of `log`, base64-encoded for `X-Amz-Log-Result`.
pub(crate) fn encode_tail(log: &str) -> String {
    use base64::Engine as _;
    let bytes = log.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(TAIL_BYTES)..];
    base64::engine::general_purpose::STANDARD.encode(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn the_tail_is_the_last_four_kilobytes() {
        let log = format!("{}END", "x".repeat(10_000));
        let tail = base64::engine::general_purpose::STANDARD
            .decode(encode_tail(&log))
            .unwrap();
        assert_eq!(tail.len(), TAIL_BYTES);
        assert!(tail.ends_with(b"xEND"));
    }
}
