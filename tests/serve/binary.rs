//! The `nimbus serve` binary on examples/serve.toml, stopped with SIGINT or SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{Scratch, EXAMPLE};

/// examples/serve.toml with `edits` applied (`(from, to)` replacements), written beside a
/// scratch folder: its functions' folders made absolute, so that it runs from anywhere.
fn example_with(scratch: &Scratch, edits: &[(&str, &str)]) -> std::path::PathBuf {
    let functions = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/functions/");
    let mut text = std::fs::read_to_string(EXAMPLE).unwrap().replace(
        "working_dir = \"functions/",
        &format!("working_dir = \"{functions}"),
    );
    for (from, to) in edits {
        assert!(text.contains(from), "examples/serve.toml says {from:?}");
        text = text.replace(from, to);
    }
    let path = scratch.0.join("serve.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `nimbus serve <file>` on a free port, its stdout read line by line; killed (and waited
/// for) when dropped, so that a failing test leaves no process behind.
struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
    addr: String,
    seen: Vec<String>,
}

impl Served {
    fn start(file: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .arg("serve")
            .arg(file)
            .args(["--bind", "127.0.0.1:0", "--grace", "1"])
            .args(["--interval", "0.1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("nimbus starts");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("nimbus| {line}");
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut served = Self {
            child,
            lines,
            addr: String::new(),
            seen: Vec::new(),
        };
        let listening = served.wait_for(|l| l.starts_with("listening on http://"));
        served.addr = listening["listening on http://".len()..].to_owned();
        served
    }

    /// The next line that `wanted` accepts (every line read is kept in `seen`).
    fn wait_for(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("nimbus printed the line in time");
            self.seen.push(line.clone());
            if wanted(&line) {
                return line;
            }
        }
    }

    fn curl(&self, args: &[&str], path: &str) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .args(args)
            .arg(format!("http://{}{path}", self.addr))
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "curl failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends `signal` (`INT`, `TERM`), then waits (at most 60 s) for the exit status and the
    /// rest of stdout.
    fn stop_with(&mut self, signal: &str) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("nimbus can be waited for") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "nimbus did not exit within 60 s of SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at end of file, which the exit brought.
        let mut seen = std::mem::take(&mut self.seen);
        seen.extend(self.lines.iter());
        (status, seen)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The numbers after each `name ` in `line` (`accepted 3, succeeded 2` gives 3 for `accepted`).
fn number(line: &str, name: &str) -> u64 {
    let at = line
        .find(&format!("{name} "))
        .unwrap_or_else(|| panic!("{name} in {line}"));
    line[at + name.len() + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn serve_stops_on_sigint_and_accounts_for_every_accepted_event() {
    const ORDERS: u64 = 16;
    const LONG_ORDERS: u64 = 2;
    // No retry: a failed order fails at once, and is kept for the host (no on_failure).
    let scratch = Scratch::new("sigint");
    let file = example_with(&scratch, &[("max_retries = 1", "max_retries = 0")]);
    let mut served = Served::start(&file);
    let invocations = "/2015-03-31/functions/orders/invocations";

    // A synchronous invoke through the Lambda API, answered by the Python process.
    let answer = served.curl(
        &[
            "-d",
            r#"{"order": 1, "items": [{"price": 2.5, "quantity": 4}]}"#,
        ],
        invocations,
    );
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"order": 1, "items": 1, "total": 10.0})
    );

    let event = |body: &str| {
        served.curl(
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "X-Amz-Invocation-Type: Event",
                "-d",
                body,
            ],
            invocations,
        )
    };
    // An order without its number: the function fails, and no destination takes the failure.
    assert_eq!(event(r#"{"items": []}"#), "202", "the bad order accepted");
    // Async orders, two at a time: 500 ms each, but the last ones a minute, so that work is
    // still queued or running at SIGINT however long the instances take to start. (A
    // process's init runs at its memory's CPU share: at shipping's 128 MB, 7 % of a core,
    // Python's start took 3.7 s on one machine, and every 500 ms order had finished before
    // shipping's first invocation.)
    for order in 0..ORDERS {
        let work_ms = if order + LONG_ORDERS >= ORDERS {
            60_000
        } else {
            500
        };
        let body =
            format!(r#"{{"order": {order}, "items": [{{"price": 1}}], "work_ms": {work_ms}}}"#);
        assert_eq!(event(&body), "202", "order {order} accepted");
    }
    // The bad order has failed, and the first orders reach the shipping function through the
    // queue, before the stop.
    served.wait_for(|l| l.starts_with("orders: ") && !l.contains(" 0 errors"));
    served.wait_for(|l| l.starts_with("shipping: ") && !l.starts_with("shipping: 0 "));

    let (status, lines) = served.stop_with("INT");
    assert!(
        status.success(),
        "nimbus serve exits 0 on SIGINT: {status:?}"
    );
    let find = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("a line starting with {prefix:?}"))
            .clone()
    };
    let orders = find("orders async:");
    let (accepted, succeeded, failed, unfinished, delivered, kept) = (
        number(&orders, "accepted"),
        number(&orders, "succeeded"),
        number(&orders, "failed"),
        number(&orders, "unfinished"),
        number(&orders, "delivered"),
        number(&orders, "kept"),
    );
    assert_eq!(accepted, ORDERS + 1);
    assert_eq!(
        succeeded + failed + unfinished,
        accepted,
        "every order is accounted for once: {orders}"
    );
    assert_eq!(
        (failed, kept),
        (1, 1),
        "the bad order failed and was kept: {orders}"
    );
    assert!(
        unfinished > 0,
        "work was in flight at SIGINT and is reported: {orders}"
    );
    assert_eq!(number(&find("handed back:"), "back:"), unfinished);
    assert_eq!(number(&find("kept:"), "kept:"), kept);
    assert_eq!(number(&orders, "delivery failures"), 0, "{orders}");
    assert_eq!(number(&orders, "discarded"), 0, "{orders}");
    // Every finished order went to the queue; each was shipped or is reported as left there.
    assert_eq!(delivered, succeeded);
    let mapping = find("mapping shipping-shipments:");
    let left = number(&find("queue shipments:"), "shipments:");
    assert!(number(&mapping, "deleted") >= 1, "{mapping}");
    assert_eq!(
        number(&mapping, "deleted") + left,
        delivered,
        "{mapping}, {left} left"
    );
}

#[test]
fn the_route_is_answered_by_its_function_throttled_and_stopped_by_sigterm() {
    let scratch = Scratch::new("route");
    let file = example_with(
        &scratch,
        &[(
            "throttle = { rate = 50, burst = 100 }",
            "throttle = { rate = 1, burst = 1 }",
        )],
    );
    let mut served = Served::start(&file);
    let answer = served.curl(&[], "/orders/42");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["order"], "42");
    assert_eq!(answer["status"], "accepted");
    // One request a second, bursts of one: of the next few, sent at once, one at least is
    // throttled, with a Retry-After, as API Gateway does.
    let throttled = (0..5)
        .map(|_| served.curl(&["-D", "-", "-o", "/dev/null"], "/orders/43"))
        .find(|headers| headers.starts_with("HTTP/1.1 429"))
        .expect("a request beyond the burst gets 429");
    assert!(
        throttled.to_ascii_lowercase().contains("\nretry-after: "),
        "{throttled}"
    );
    let (status, lines) = served.stop_with("TERM");
    assert!(
        status.success(),
        "nimbus serve exits 0 on SIGTERM: {status:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("stopping (SIGTERM)")),
        "{lines:?}"
    );
}
