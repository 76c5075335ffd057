//! `nimbus serve`: the loader's errors name the line and the field; buckets and Redis mappings
//! of a file reach their functions; and the binary serves examples/serve.toml, then stops on
//! SIGINT or SIGTERM without losing an accepted event: each one is finished (succeeded, or
//! failed and kept) or reported as handed back unfinished, and each finished order reaches the
//! shipping function or is reported as left in its queue.

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

#[test]
fn a_field_after_a_layer_sub_table_names_its_own_line() {
    let text = "[[functions]]\nname = \"orders\"\n\n[[functions.layers]]\n\
                name = \"deps\"\npath = \"layer\"\n\n[[functions]]\nname = \"other\"\n\n\
                [[functions.layers]]\nname = \"l\"\npath = \"l\"\n\n[functions.async]\nmax_retries = 9\n";
    let error = error_of(text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(16), "max_retries"),
        "{error}"
    );
    // A layer that is not there: the line of its `[[functions.layers]]` header.
    let error = error_of(&text.replace(
        "name = \"orders\"\n",
        "name = \"orders\"\ncommand = \"python3\"\n",
    ));
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(5), "layers"),
        "{error}"
    );
}

#[test]
fn a_route_that_takes_the_requests_of_another_names_the_second_route() {
    let text = format!(
        "{TWO_FUNCTIONS}\n[[routes]]\nmethod = \"GET\"\npath = \"/orders/{{id}}\"\nfunction = \"orders\"\n\n\
         [[routes]]\nmethod = \"get\"\npath = \"/orders/{{order}}\"\nfunction = \"orders\"\n"
    );
    let error = error_of(&text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(16), "path"),
        "{error}"
    );
    assert!(error.message.contains("GET /orders/{id}"), "{error}");
    let greedy = format!(
        "{TWO_FUNCTIONS}\n[[routes]]\nmethod = \"ANY\"\npath = \"/f/{{proxy+}}\"\nfunction = \"orders\"\n\n\
         [[routes]]\nmethod = \"ANY\"\npath = \"/f/{{rest+}}\"\nfunction = \"orders\"\n"
    );
    assert_eq!(error_of(&greedy).line, Some(16));
    // Another method, or a parameter where the other has a literal, is another route.
    let distinct = format!(
        "{TWO_FUNCTIONS}\n[[routes]]\nmethod = \"GET\"\npath = \"/orders/{{id}}\"\nfunction = \"orders\"\n\n\
         [[routes]]\nmethod = \"POST\"\npath = \"/orders/{{id}}\"\nfunction = \"orders\"\n\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/orders/new\"\nfunction = \"orders\"\n"
    );
    parse(&distinct).expect("three distinct routes");
}

const MAPPED: &str = "[[functions]]\nname = \"worker\"\n\n[[queues]]\nname = \"jobs\"\n\n";

#[test]
fn a_mapping_may_allow_fewer_concurrent_batches_than_the_default_start() {
    for max in [2, 3, 4, 5, 1000] {
        let text = format!("{MAPPED}[[mappings]]\nfunction = \"worker\"\nqueue = \"jobs\"\nmax_concurrency = {max}\n");
        parse(&text).unwrap_or_else(|e| panic!("max_concurrency = {max}: {e}"));
    }
    let text = format!(
        "{MAPPED}[[mappings]]\nfunction = \"worker\"\nqueue = \"jobs\"\nmax_concurrency = 1\n"
    );
    let error = error_of(&text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(10), "max_concurrency"),
        "{error}"
    );
}

#[test]
fn two_mappings_of_one_name_are_an_error() {
    let text = format!(
        "{MAPPED}[[mappings]]\nfunction = \"worker\"\nqueue = \"jobs\"\n\n\
         [[mappings]]\nfunction = \"worker\"\nqueue = \"jobs\"\n"
    );
    let error = error_of(&text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(12), "function"),
        "{error}"
    );
    assert!(error.message.contains("`worker-jobs`"), "{error}");
    let named = format!(
        "{MAPPED}[[mappings]]\nname = \"m\"\nfunction = \"worker\"\nqueue = \"jobs\"\n\n\
         [[mappings]]\nfunction = \"worker\"\nname = \"m\"\nqueue = \"jobs\"\n"
    );
    let error = error_of(&named);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(14), "name"),
        "{error}"
    );
}

#[test]
fn errors_name_the_field_the_file_spells() {
    // A generated name too long: it comes from `function` (and the source).
    let long = "q".repeat(80);
    let text = format!(
        "[[functions]]\nname = \"{}\"\n\n[[queues]]\nname = \"{long}\"\n\n[[mappings]]\nfunction = \"{}\"\nqueue = \"{long}\"\n",
        "f".repeat(60),
        "f".repeat(60)
    );
    let error = error_of(&text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(8), "function"),
        "{error}"
    );
    // An empty broker name is the broker table's `name`.
    let text = "[[functions]]\nname = \"w\"\n\n[[mappings]]\nfunction = \"w\"\nbatch_size = 5\n\
                redis = { url = \"redis://127.0.0.1:6379\", name = \"\" }\n";
    let error = error_of(text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(7), "name"),
        "{error}"
    );
}

#[test]
fn an_empty_file_or_an_empty_name_is_an_error() {
    let error = error_of("");
    assert_eq!(error.field, "functions");
    assert!(error.message.contains("declares no functions"), "{error}");
    let error = error_of("[http]\nbind = \"127.0.0.1:0\"\n");
    assert!(error.message.contains("declares no functions"), "{error}");
    let error = error_of("[[functions]]\ncommand = \"x\"\nname = \"\"\n");
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(3), "name"),
        "{error}"
    );
    let error = error_of("[[functions]]\nname = \"a b\"\n");
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(2), "name"),
        "{error}"
    );
}

const BUCKET: &str = "[[functions]]\nname = \"thumbs\"\n\n[[buckets]]\nname = \"photos\"\ndirectory = \"data\"\n\n\
                      [[buckets.notifications]]\nevents = [\"s3:ObjectCreated:*\"]\nprefix = \"in/\"\nsuffix = \".jpg\"\nfunction = \"thumbs\"\n";

#[test]
fn buckets_and_their_notification_rules_are_checked() {
    parse(BUCKET).expect("a bucket with one rule");
    let error = error_of(&BUCKET.replace("s3:ObjectCreated:*", "s3:ObjectMade"));
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(9), "events"),
        "{error}"
    );
    let error = error_of(&BUCKET.replace("function = \"thumbs\"\n", "function = \"thumb\"\n"));
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(12), "function"),
        "{error}"
    );
    let error = error_of(&BUCKET.replace("\"photos\"", "\"Photos\""));
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(5), "name"),
        "{error}"
    );
    // Two rules that match the same events of the same keys.
    let twice = format!(
        "{BUCKET}\n[[buckets.notifications]]\nevents = [\"s3:ObjectCreated:Put\"]\nprefix = \"in/\"\nfunction = \"thumbs\"\n"
    );
    let error = error_of(&twice);
    assert_eq!(error.line, Some(14), "{error}");
    // A mapping's target takes queue batches, not S3 events.
    let mapped = format!("{BUCKET}\n[[queues]]\nname = \"q\"\n\n[[mappings]]\nfunction = \"thumbs\"\nqueue = \"q\"\n");
    let error = error_of(&mapped);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(12), "function"),
        "{error}"
    );
    let error = error_of(&format!(
        "{BUCKET}\n[[buckets]]\nname = \"other\"\ndirectory = \"data\"\n"
    ));
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(16), "directory"),
        "{error}"
    );
}

/// A folder of its own under the system's temporary directory, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("nimbus-serve-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A JSON host function that sends every event it gets to `seen`.
fn recorder(
    name: &str,
    seen: tokio::sync::mpsc::UnboundedSender<serde_json::Value>,
) -> nimbus::Function<serde_json::Value, serde_json::Value> {
    nimbus::Function::new(
        name,
        nimbus::handler_fn(move |event: serde_json::Value, _ctx: nimbus::Context| {
            let seen = seen.clone();
            async move {
                let _ = seen.send(event);
                Ok::<_, nimbus::FunctionError>(serde_json::Value::Null)
            }
        }),
    )
}

#[tokio::test]
async fn a_file_written_into_a_bucket_invokes_its_function() {
    let scratch = Scratch::new("bucket");
    let path = scratch.0.join("nimbus.toml");
    let text = format!("[http]\nbind = \"127.0.0.1:0\"\n\n{BUCKET}");
    let (send, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let file = ServeFile::parse(&text, &path)
        .unwrap()
        .with_function(recorder("thumbs", send));
    let platform = file.start(nimbus::Runtime::default()).await.unwrap();
    let (name, folder) = platform.buckets()[0].clone();
    assert_eq!(name, "photos");
    std::fs::create_dir_all(folder.join("in")).unwrap();
    // Another program writes files: only in/*.jpg matches the rule.
    std::fs::write(folder.join("in").join("notes.txt"), "no").unwrap();
    std::fs::write(folder.join("in").join("cat.jpg"), "meow").unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), seen.recv())
        .await
        .expect("the function is invoked in time")
        .unwrap();
    let record = &event["Records"][0];
    assert_eq!(record["eventSource"], "aws:s3");
    assert_eq!(record["s3"]["bucket"]["name"], "photos");
    assert_eq!(record["s3"]["object"]["key"], "in/cat.jpg");
    assert!(
        record["eventName"]
            .as_str()
            .unwrap()
            .starts_with("ObjectCreated:"),
        "{event}"
    );
    platform.stop(Duration::from_secs(1)).await;
    assert!(seen.try_recv().is_err(), "notes.txt matched no rule");
}

#[tokio::test]
async fn a_stop_delivers_on_success_records_to_a_function_before_it_closes() {
    const EVENTS: u64 = 10;
    let text = "[http]\nbind = \"127.0.0.1:0\"\n\n[[functions]]\nname = \"first\"\n\n\
                [functions.async]\non_success = { function = \"second\" }\n\n\
                [[functions]]\nname = \"second\"\n";
    let first = nimbus::Function::new(
        "first",
        nimbus::handler_fn(|n: serde_json::Value, _ctx: nimbus::Context| async move {
            // Some work, so that most events are still pending when the stop begins.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, nimbus::FunctionError>(n)
        }),
    )
    .with_max_concurrency(1);
    let (send, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let file = parse(text)
        .unwrap()
        .with_function(first)
        .with_function(recorder("second", send));
    let platform = file.start(nimbus::Runtime::default()).await.unwrap();
    let runtime = platform.runtime().clone();
    for n in 0..EVENTS {
        runtime
            .invoke_async_json("first", serde_json::json!(n))
            .unwrap();
    }
    let report = platform.stop(Duration::from_secs(10)).await;
    assert!(report.shutdown.handed_back.is_empty());
    let metrics = runtime.async_metrics("first").unwrap();
    assert_eq!((metrics.delivered, metrics.delivery_failures), (EVENTS, 0));
    let mut records = 0;
    while let Ok(record) = seen.try_recv() {
        assert_eq!(record["requestContext"]["condition"], "Success");
        records += 1;
    }
    assert_eq!(
        records, EVENTS,
        "every record reached `second` before it closed"
    );
}

#[tokio::test]
async fn a_listener_that_cannot_bind_stops_the_start_before_any_source_is_read() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let scratch = Scratch::new("bind");
    let path = scratch.0.join("nimbus.toml");
    let text = format!(
        "[http]\nbind = \"{}\"\n\n{BUCKET}",
        taken.local_addr().unwrap()
    );
    let (send, _seen) = tokio::sync::mpsc::unbounded_channel();
    let file = ServeFile::parse(&text, &path)
        .unwrap()
        .with_function(recorder("thumbs", send));
    let error = file
        .start(nimbus::Runtime::default())
        .await
        .expect_err("the address is taken");
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(2), "bind"),
        "{error}"
    );
    // The bucket's store was never opened (opening creates its directory).
    assert!(!scratch.0.join("data").exists());
}

/// Whether a broker test runs: the service answers, or the test skips loudly (fails under
/// `NIMBUS_REQUIRE_SERVICES=1`).
async fn service_reachable(name: &str, addr: &str) -> bool {
    let connect = tokio::net::TcpStream::connect(addr);
    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
        return true;
    }
    if std::env::var("NIMBUS_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{name} is unreachable at {addr} and NIMBUS_REQUIRE_SERVICES=1");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {name} is unreachable at {addr} (set NIMBUS_REQUIRE_SERVICES=1 to fail instead)"
    );
    false
}

/// Deletes the Redis keys under `prefix` when dropped.
struct RedisKeys(String);

impl Drop for RedisKeys {
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open("redis://127.0.0.1:6379") {
            if let Ok(mut con) = client.get_connection() {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.0))
                    .query(&mut con)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut con);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_mapping_of_the_file_drains_the_stream_into_its_function() {
    if !service_reachable("Redis", "127.0.0.1:6379").await {
        return;
    }
    let url = "redis://127.0.0.1:6379";
    let keys = RedisKeys(format!(
        "nimbus-test:serve:{}:{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let key = format!("{}:orders", keys.0);
    let text = format!(
        "[http]\nbind = \"127.0.0.1:0\"\n\n[[functions]]\nname = \"consumer\"\n\n\
         [[mappings]]\nfunction = \"consumer\"\nbatch_size = 10\nbatching_window = 0.05\n\
         redis = {{ url = \"{url}\", name = \"{key}\" }}\n"
    );
    let (send, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    let consumer = nimbus::Function::new(
        "consumer",
        nimbus::handler_fn(
            move |batch: nimbus::sources::QueueBatch, _ctx: nimbus::Context| {
                let send = send.clone();
                async move {
                    for record in &batch.records {
                        let _ = send.send(String::from_utf8_lossy(&record.body).into_owned());
                    }
                    Ok::<_, nimbus::FunctionError>(nimbus::sources::BatchResponse::success())
                }
            },
        ),
    );
    let file = parse(&text).unwrap().with_queue_function(consumer);
    let platform = file.start(nimbus::Runtime::default()).await.unwrap();
    assert_eq!(platform.mappings()[0].name(), format!("consumer-{key}"));

    // A producer of its own, with the adapter's API.
    let producer = nimbus::redis::RedisQueue::connect(nimbus::redis::RedisConfig::new(url, &key))
        .await
        .unwrap();
    for n in 0..5 {
        producer.send(format!("order {n}").into()).await.unwrap();
    }
    let mut bodies = Vec::new();
    while bodies.len() < 5 {
        let body = tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .expect("the messages reach the function in time")
            .unwrap();
        bodies.push(body);
    }
    bodies.sort();
    assert_eq!(
        bodies,
        (0..5).map(|n| format!("order {n}")).collect::<Vec<_>>()
    );
    let report = platform.stop(Duration::from_secs(2)).await;
    let (_, metrics) = &report.mappings[0];
    assert_eq!(metrics.deleted, 5);
    drop(keys);
}

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
    // Async orders: 500 ms each, two at a time, so that most are still queued at SIGINT.
    for order in 0..ORDERS {
        let body = format!(r#"{{"order": {order}, "items": [{{"price": 1}}], "work_ms": 500}}"#);
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
