//! `nimbus serve`: the loader's errors name the line and the field, and the binary serves
//! examples/serve.toml, then stops on SIGINT without losing an accepted event: each one is
//! either finished or reported as handed back, and each finished order reaches the shipping
//! function or is reported as left in its queue.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nimbus::serve::{ServeError, ServeFile};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/serve.toml");

fn parse(text: &str) -> Result<ServeFile, ServeError> {
    ServeFile::parse(text, "nimbus.toml")
}

fn error_of(text: &str) -> ServeError {
    parse(text).expect_err("the file has a mistake")
}

const TWO_FUNCTIONS: &str = r#"
[[functions]]
name = "orders"
command = "python3"

[[functions]]
name = "host-side"
"#;

#[test]
fn the_example_file_is_valid() {
    let file = ServeFile::load(EXAMPLE).expect("examples/serve.toml is valid");
    assert_eq!(file.function_names(), ["orders", "shipping"]);
}

#[test]
fn an_unknown_field_names_its_line_and_field() {
    let error = error_of(&format!("{TWO_FUNCTIONS}memory = 128\n"));
    assert_eq!((error.line, error.field.as_str()), (Some(8), "memory"));
    assert!(
        error
            .to_string()
            .starts_with("nimbus.toml:8: `memory`: unknown field"),
        "{error}"
    );
}

#[test]
fn a_value_of_the_wrong_type_names_its_line_and_field() {
    let error = error_of(&format!("{TWO_FUNCTIONS}timeout = \"ten\"\n"));
    assert_eq!((error.line, error.field.as_str()), (Some(8), "timeout"));
    let error = error_of("[[routes]]\nmethod = \"GET\"\npath = \"/\"\nfunction = \"f\"\nthrottle = { rate = \"x\", burst = 1 }\n");
    assert_eq!((error.line, error.field.as_str()), (Some(5), "rate"));
}

#[test]
fn a_route_to_an_undeclared_function_names_its_line() {
    let text = format!(
        "{TWO_FUNCTIONS}\n[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nfunction = \"orders\"\n\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/b\"\nfunction = \"ordres\"\n"
    );
    let error = error_of(&text);
    assert_eq!((error.line, error.field.as_str()), (Some(17), "function"));
    assert!(error.message.contains("`ordres`"), "{error}");
}

#[test]
fn an_invalid_value_is_checked_by_the_runtime_and_names_its_line() {
    let error = error_of(&format!("{TWO_FUNCTIONS}timeout = 3\nmemory_mb = 1\n"));
    assert_eq!((error.line, error.field.as_str()), (Some(9), "memory_mb"));
    assert!(error.message.contains("128"), "the allowed range: {error}");
    let error = error_of(&format!("{TWO_FUNCTIONS}timeout = -1\n"));
    assert_eq!((error.line, error.field.as_str()), (Some(8), "timeout"));
}

#[test]
fn references_to_queues_and_payloads_are_checked() {
    let error = error_of(&format!(
        "{TWO_FUNCTIONS}\n[[mappings]]\nfunction = \"orders\"\nqueue = \"nowhere\"\n"
    ));
    assert_eq!((error.line, error.field.as_str()), (Some(11), "queue"));
    let error = error_of(&format!(
        "{TWO_FUNCTIONS}\n[[routes]]\nmethod = \"GET\"\npath = \"/\"\nfunction = \"orders\"\npayload = \"3.0\"\n"
    ));
    assert_eq!((error.line, error.field.as_str()), (Some(13), "payload"));
}

#[tokio::test]
async fn a_function_without_command_must_come_from_the_host() {
    let file = parse(TWO_FUNCTIONS).unwrap();
    let error = file
        .start(nimbus::Runtime::default())
        .await
        .expect_err("host-side is not provided");
    assert_eq!((error.line, error.field.as_str()), (Some(7), "name"));
    assert!(error.message.contains("`host-side`"), "{error}");
}

/// `nimbus serve examples/serve.toml` on a free port, its stdout read line by line.
struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
    addr: String,
    seen: Vec<String>,
}

impl Served {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .args(["serve", EXAMPLE, "--bind", "127.0.0.1:0", "--grace", "1"])
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

    /// SIGINT, then the exit status and the rest of stdout.
    fn interrupt(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().expect("nimbus exits");
        self.seen.extend(self.lines.iter());
        (status, self.seen)
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
    let mut served = Served::start();
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

    // Async orders: 500 ms each, two at a time, so that most are still queued at SIGINT.
    for order in 0..ORDERS {
        let body = format!(r#"{{"order": {order}, "items": [{{"price": 1}}], "work_ms": 500}}"#);
        let status = served.curl(
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "X-Amz-Invocation-Type: Event",
                "-d",
                &body,
            ],
            invocations,
        );
        assert_eq!(status, "202", "order {order} accepted");
    }
    // The first orders reach the shipping function through the queue before the stop.
    served.wait_for(|l| l.starts_with("shipping: ") && !l.starts_with("shipping: 0 "));

    let (status, lines) = served.interrupt();
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
    let (accepted, succeeded, failed, delivered, handed_back) = (
        number(&orders, "accepted"),
        number(&orders, "succeeded"),
        number(&orders, "failed"),
        number(&orders, "delivered"),
        number(&orders, "handed back"),
    );
    assert_eq!(accepted, ORDERS);
    assert_eq!(
        succeeded + failed + handed_back,
        accepted,
        "every order is accounted for"
    );
    assert!(
        handed_back > 0,
        "work was in flight at SIGINT and is reported: {orders}"
    );
    assert_eq!(number(&find("handed back:"), "back:"), handed_back);
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
fn the_route_is_answered_by_its_function() {
    let served = Served::start();
    let answer = served.curl(&[], "/orders/42");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["order"], "42");
    assert_eq!(answer["status"], "accepted");
    let (status, _) = served.interrupt();
    assert!(status.success());
}
