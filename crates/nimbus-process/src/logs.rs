//! An instance's log: its process's stdout and stderr through one pipe (so their lines keep
//! their order), cut into invocations with Lambda's `START`, `END` and `REPORT` lines, each line
//! emitted as a `tracing` event (target `nimbus::function`), and the last [`TAIL_BYTES`] of each
//! invocation kept in [`LogTails`] for callers who ask (the Invoke API's `Tail` log type).

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nimbus_core::util::aws::rfc3339_millis;
use nimbus_core::{InvokeError, RequestId, UsageReport};
use parking_lot::Mutex;
use tokio::net::unix::pipe;
use tokio::task::AbortHandle;

/// How much of an invocation's log is kept: Lambda's `X-Amz-Log-Result` carries the last 4 KB.
pub const TAIL_BYTES: usize = 4 * 1024;

/// How much is read from the pipe in one go: a runtime that writes without pause must not keep
/// a worker thread (or the log's lock) for long.
const READ_BATCH: usize = 64 * 1024;

/// A line longer than this is cut: a runtime that writes without newlines cannot grow the buffer
/// without bound.
const MAX_LINE: usize = 64 * 1024;

/// The last [`TAIL_BYTES`] of the log of recent invocations of one function, by request id.
///
/// # Example
///
/// ```
/// use nimbus_process::LogTails;
/// use nimbus_core::RequestId;
///
/// let tails = LogTails::new(2);
/// assert_eq!(tails.get(RequestId::from_u128(1)), None);
/// ```
#[derive(Debug, Clone)]
pub struct LogTails {
    inner: Arc<Mutex<Tails>>,
}

#[derive(Debug)]
struct Tails {
    by_id: HashMap<RequestId, String>,
    order: VecDeque<RequestId>,
    capacity: usize,
}

impl LogTails {
    /// Keeps the tails of the last `capacity` invocations.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Tails {
                by_id: HashMap::new(),
                order: VecDeque::new(),
                capacity: capacity.max(1),
            })),
        }
    }

    /// The end of the log of invocation `request_id`, from its `START` line (or the init phase's
    /// output before it, on a cold start) to its `REPORT` line, if it is still kept.
    pub fn get(&self, request_id: RequestId) -> Option<String> {
        self.inner.lock().by_id.get(&request_id).cloned()
    }

    fn insert(&self, request_id: RequestId, tail: String) {
        let mut tails = self.inner.lock();
        if tails.by_id.insert(request_id, tail).is_none() {
            tails.order.push_back(request_id);
        }
        while tails.order.len() > tails.capacity {
            if let Some(old) = tails.order.pop_front() {
                tails.by_id.remove(&old);
            }
        }
    }
}

/// Text that keeps only its last [`TAIL_BYTES`] (trimmed lazily, at char boundaries).
#[derive(Debug, Default)]
struct Tail(String);

impl Tail {
    fn push_line(&mut self, line: &str) {
        self.0.push_str(line);
        self.0.push('\n');
        if self.0.len() > 2 * TAIL_BYTES {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.0.len() > TAIL_BYTES {
            let mut cut = self.0.len() - TAIL_BYTES;
            while !self.0.is_char_boundary(cut) {
                cut += 1;
            }
            self.0.drain(..cut);
        }
    }

    fn take(&mut self) -> String {
        self.trim();
        std::mem::take(&mut self.0)
    }
}

/// Where an instance's lines go.
#[derive(Debug)]
struct LogState {
    function: Arc<str>,
    log_stream: Arc<str>,
    /// Bytes of a line not ended yet.
    partial: Vec<u8>,
    /// The invocation running, if any.
    current: Option<RequestId>,
    /// The log since the last invocation ended (the init phase's output, before a cold start's
    /// first `START`).
    text: Tail,
    /// The read end is closed: the process and everything it started are gone.
    closed: bool,
}

impl LogState {
    fn line(&mut self, line: &str) {
        tracing::info!(
            target: "nimbus::function",
            function = %self.function,
            log_stream = %self.log_stream,
            request_id = self.current.map(tracing::field::display),
            "{line}"
        );
        self.text.push_line(line);
    }

    /// Reads what the pipe holds now, up to [`READ_BATCH`] bytes, without waiting; whole lines
    /// are logged. Returns whether more may be waiting.
    fn read_available(&mut self, pipe: &pipe::Receiver) -> bool {
        let mut buf = [0u8; 8192];
        let mut read = 0;
        while !self.closed {
            if read >= READ_BATCH {
                return true;
            }
            match pipe.try_read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    self.flush_partial();
                }
                Ok(n) => {
                    read += n;
                    self.bytes(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    self.flush_partial();
                }
            }
        }
        false
    }

    fn bytes(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&bytes[..end]);
            self.flush_partial();
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
        if self.partial.len() >= MAX_LINE {
            self.flush_partial();
        }
    }

    fn flush_partial(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let partial = std::mem::take(&mut self.partial);
        let line = String::from_utf8_lossy(&partial);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        self.line(line);
        self.partial = partial;
        self.partial.clear();
    }
}

/// An instance's log capture: a task reads the pipe as output arrives; [`LogCapture::start`]
/// and [`LogCapture::finish`] frame each invocation and first read what the pipe already holds
/// (up to [`READ_BATCH`] bytes), so a line the runtime wrote before it answered is in that
/// invocation's log. Reads are batched, so a runtime that writes without pause slows only its
/// own log: lines beyond a batch may land in the next invocation's log.
#[derive(Debug)]
pub(crate) struct LogCapture {
    state: Arc<Mutex<LogState>>,
    pipe: Arc<pipe::Receiver>,
    reader: AbortHandle,
    tails: LogTails,
}

impl LogCapture {
    /// A capture for an instance of `function` logging to `log_stream`; the returned fd is the
    /// pipe's write end, for the child's stdout and stderr.
    pub(crate) fn new(
        function: &str,
        log_stream: &str,
        tails: LogTails,
    ) -> std::io::Result<(Self, OwnedFd)> {
        let (writer, reader) = pipe::pipe()?;
        let writer = writer.into_blocking_fd()?;
        let state = Arc::new(Mutex::new(LogState {
            function: Arc::from(function),
            log_stream: Arc::from(log_stream),
            partial: Vec::new(),
            current: None,
            text: Tail::default(),
            closed: false,
        }));
        let pipe = Arc::new(reader);
        let task = {
            let state = Arc::clone(&state);
            let pipe = Arc::clone(&pipe);
            tokio::spawn(async move {
                loop {
                    if pipe.readable().await.is_err() {
                        return;
                    }
                    let (more, closed) = {
                        let mut log = state.lock();
                        let more = log.read_available(&pipe);
                        (more, log.closed)
                    };
                    if closed {
                        return;
                    }
                    if more {
                        // A flood of output: let the host's other tasks run between batches.
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        Ok((
            Self {
                state,
                pipe,
                reader: task.abort_handle(),
                tails,
            },
            writer,
        ))
    }

    /// Opens invocation `request_id`'s log with its `START` line.
    pub(crate) fn start(&self, request_id: RequestId) {
        let mut state = self.state.lock();
        state.read_available(&self.pipe);
        state.current = Some(request_id);
        state.line(&format!("START RequestId: {request_id} Version: $LATEST"));
    }

    /// Closes the running invocation's log with its `END` and `REPORT` lines (after a timeout
    /// line, as Lambda writes one) and keeps its tail.
    pub(crate) fn finish(
        &self,
        report: &UsageReport,
        error: Option<&InvokeError>,
        cpu_capped: bool,
    ) {
        let mut state = self.state.lock();
        state.read_available(&self.pipe);
        state.flush_partial();
        let id = report.request_id;
        if let Some(InvokeError::Timeout(after)) = error {
            let now = rfc3339_millis(SystemTime::now());
            state.line(&format!(
                "{now} {id} Task timed out after {:.2} seconds",
                after.as_secs_f64()
            ));
        }
        state.line(&format!("END RequestId: {id}"));
        state.line(&report_line(report, cpu_capped));
        state.current = None;
        let tail = state.text.take();
        drop(state);
        self.tails.insert(id, tail);
    }

    /// What the instance logged so far outside invocations (its init phase, on a failed init).
    pub(crate) fn pending_text(&self) -> String {
        let mut state = self.state.lock();
        state.read_available(&self.pipe);
        state.flush_partial();
        state.text.take()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Lambda's `REPORT` line (tab-separated, as CloudWatch shows it), and a note when the CPU share
/// could not be capped on this host.
fn report_line(report: &UsageReport, cpu_capped: bool) -> String {
    let mut line = format!(
        "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB",
        report.request_id,
        ms(report.duration),
        report.billed_duration.as_millis(),
        report.memory_mb
    );
    if let Some(used) = report.max_memory_used_mb {
        line.push_str(&format!("\tMax Memory Used: {used} MB"));
    }
    if let Some(init) = report.init_duration {
        line.push_str(&format!("\tInit Duration: {:.2} ms", ms(init)));
    }
    if !cpu_capped {
        line.push_str("\tCPU: not capped (no writable cgroup; memory limited by RLIMIT_DATA)");
    }
    line
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_bytes_at_a_char_boundary() {
        let mut tail = Tail::default();
        for i in 0..1_000 {
            tail.push_line(&format!("é line {i}"));
        }
        let text = tail.take();
        assert!(text.len() <= TAIL_BYTES);
        assert!(text.ends_with("é line 999\n"));
    }

    #[test]
    fn tails_forget_the_oldest_beyond_their_capacity() {
        let tails = LogTails::new(2);
        for i in 1..=3u128 {
            tails.insert(RequestId::from_u128(i), format!("log {i}"));
        }
        assert_eq!(tails.get(RequestId::from_u128(1)), None);
        assert_eq!(tails.get(RequestId::from_u128(3)).as_deref(), Some("log 3"));
    }
}
