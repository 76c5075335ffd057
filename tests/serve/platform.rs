//! A loaded file started in the test's process: buckets, destinations, the listener, and a
//! Redis mapping.

use std::time::Duration;

use nimbus::serve::ServeFile;

use crate::support::{parse, Scratch, BUCKET};

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
