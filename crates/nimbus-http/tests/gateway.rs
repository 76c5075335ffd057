//! The API gateway end to end: in-process functions behind routes, driven with real `curl`
//! (and, for signed routes, botocore).

#[path = "gateway/auth.rs"]
mod auth;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use nimbus_core::{handler_fn, Context, Function, FunctionConfig, FunctionError, Runtime};
use nimbus_http::{HttpConfig, PayloadVersion, Route, Server, Serving};
use serde_json::{json, Value};

/// What curl saw.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A fresh path in the temp directory.
fn temp_path(tag: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("nimbus-gateway-{}-{tag}-{n}", std::process::id()))
}

/// Runs curl against `url` with `args`, off the runtime's threads.
async fn curl(url: String, args: Vec<String>) -> Answer {
    tokio::task::spawn_blocking(move || {
        let headers_file = temp_path("headers");
        let body_file = temp_path("body");
        let status = std::process::Command::new("curl")
            .arg("-sS")
            .arg("-D")
            .arg(&headers_file)
            .arg("-o")
            .arg(&body_file)
            .args(&args)
            .arg(&url)
            .status()
            .expect("curl runs");
        assert!(status.success(), "curl failed: {status}");
        let raw_headers = std::fs::read_to_string(&headers_file).unwrap();
        let body = std::fs::read(&body_file).unwrap_or_default();
        let _ = std::fs::remove_file(&headers_file);
        let _ = std::fs::remove_file(&body_file);
        let mut lines = raw_headers.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body,
        }
    })
    .await
    .unwrap()
}

async fn register(runtime: &Runtime, name: &str, timeout: Duration, answer: fn(Value) -> Value) {
    let function = Function::new(
        name,
        handler_fn(move |event: Value, _ctx: Context| async move {
            Ok::<_, FunctionError>(answer(event))
        }),
    )
    .with_config(FunctionConfig::default().with_timeout(timeout));
    runtime.register(function).await.unwrap();
}

async fn serve(runtime: &Runtime, config: HttpConfig, routes: Vec<Route>) -> Serving {
    let config = config.with_bind("127.0.0.1:0".parse().unwrap());
    let mut server = Server::new(runtime.clone()).with_config(config);
    for route in routes {
        server = server.route(route);
    }
    server.bind().await.unwrap()
}

fn url(serving: &Serving, path: &str) -> String {
    format!("http://{}{path}", serving.local_addr())
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn finish(serving: Serving, runtime: Runtime) {
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_route_with_path_parameter_and_cookies() {
    let runtime = Runtime::default();
    register(&runtime, "gw_orders", SECOND, |event| {
        let body = json!({
            "id": event["pathParameters"]["id"],
            "routeKey": event["routeKey"],
            "cookies": event["cookies"],
            "query": event["queryStringParameters"],
            "sourceIp": event["requestContext"]["http"]["sourceIp"],
        });
        json!({
            "statusCode": 201,
            "headers": {"x-order": "yes"},
            "cookies": ["session=abc; Path=/; HttpOnly", "theme=dark"],
            "body": body.to_string(),
        })
    })
    .await;
    let serving = serve(
        &runtime,
        HttpConfig::default(),
        vec![Route::new("GET", "/orders/{id}", "gw_orders").unwrap()],
    )
    .await;
    let answer = curl(
        url(&serving, "/orders/a%20b?x=1&x=2"),
        args(&["-H", "Cookie: c1=v1; c2=v2"]),
    )
    .await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.header("x-order"), ["yes"]);
    assert_eq!(
        answer.header("set-cookie"),
        ["session=abc; Path=/; HttpOnly", "theme=dark"]
    );
    assert_eq!(answer.header("content-type"), ["application/json"]);
    assert_eq!(answer.header("apigw-requestid").len(), 1);
    assert_eq!(
        answer.json(),
        json!({"id": "a b", "routeKey": "GET /orders/{id}", "cookies": ["c1=v1", "c2=v2"],
               "query": {"x": "1,2"}, "sourceIp": "127.0.0.1"})
    );
    finish(serving, runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_bodies_round_trip_through_base64() {
    let runtime = Runtime::default();
    // Reverses the bytes: they arrive base64, and go back base64.
    register(&runtime, "gw_reverse", SECOND, |event| {
        let engine = base64::engine::general_purpose::STANDARD;
        if event["isBase64Encoded"] != json!(true) {
            return json!({"statusCode": 400, "body": "expected base64"});
        }
        let mut bytes = engine
            .decode(event["body"].as_str().unwrap_or_default())
            .unwrap_or_default();
        bytes.reverse();
        json!({
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "body": engine.encode(bytes),
            "isBase64Encoded": true,
        })
    })
    .await;
    let serving = serve(
        &runtime,
        HttpConfig::default(),
        vec![Route::new("POST", "/blob", "gw_reverse").unwrap()],
    )
    .await;
    let input: Vec<u8> = (0..=255_u8).chain([0, 255, 10, 13]).collect();
    let input_file = temp_path("input");
    std::fs::write(&input_file, &input).unwrap();
    let answer = curl(
        url(&serving, "/blob"),
        vec![
            "-H".into(),
            "Content-Type: application/octet-stream".into(),
            "--data-binary".into(),
            format!("@{}", input_file.display()),
        ],
    )
    .await;
    let _ = std::fs::remove_file(&input_file);
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), ["application/octet-stream"]);
    let mut expected = input;
    expected.reverse();
    assert_eq!(answer.body, expected);
    finish(serving, runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_route_and_its_malformed_output() {
    let runtime = Runtime::default();
    register(&runtime, "gw_rest", SECOND, |event| {
        json!({
            "statusCode": 202,
            "headers": {"x-resource": event["resource"]},
            "multiValueHeaders": {"x-multi": ["a", "b"]},
            "body": format!("{} {} {}", event["httpMethod"].as_str().unwrap_or_default(),
                            event["path"].as_str().unwrap_or_default(),
                            event["multiValueQueryStringParameters"]["q"]),
        })
    })
    .await;
    register(
        &runtime,
        "gw_malformed",
        SECOND,
        |_| json!({"statusCode": 200, "body": "ok", "unexpected": true}),
    )
    .await;
    let serving = serve(
        &runtime,
        HttpConfig::default(),
        vec![
            Route::new("ANY", "/items/{proxy+}", "gw_rest")
                .unwrap()
                .with_payload(PayloadVersion::V1),
            Route::new("GET", "/broken", "gw_malformed")
                .unwrap()
                .with_payload(PayloadVersion::V1),
        ],
    )
    .await;
    let answer = curl(url(&serving, "/items/a/b?q=1&q=2"), args(&["-X", "PUT"])).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.header("x-resource"), ["/items/{proxy+}"]);
    assert_eq!(answer.header("x-multi"), ["a", "b"]);
    assert_eq!(answer.body, br#"PUT /items/a/b ["1","2"]"#);

    let answer = curl(url(&serving, "/broken"), vec![]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json(), json!({"message": "Internal server error"}));
    assert_eq!(answer.header("content-type"), ["application/json"]);

    // Every route is 1.0: a REST API, which answers an unknown route with 403.
    let answer = curl(url(&serving, "/nowhere"), vec![]).await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.json(),
        json!({"message": "Missing Authentication Token"})
    );
    finish(serving, runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_past_its_timeout_is_504() {
    let runtime = Runtime::default();
    let sleeper = Function::new(
        "gw_sleeper",
        handler_fn(|_: Value, _ctx: Context| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, FunctionError>(json!("late"))
        }),
    )
    .with_config(FunctionConfig::default().with_timeout(Duration::from_millis(200)));
    runtime.register(sleeper).await.unwrap();
    let serving = serve(
        &runtime,
        HttpConfig::default(),
        vec![Route::new("GET", "/slow", "gw_sleeper").unwrap()],
    )
    .await;
    let answer = curl(url(&serving, "/slow"), vec![]).await;
    assert_eq!(answer.status, 504);
    assert_eq!(
        answer.json(),
        json!({"message": "Endpoint request timed out"})
    );
    finish(serving, runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_throttle_answers_429_with_retry_after() {
    let runtime = Runtime::default();
    register(&runtime, "gw_limited", SECOND, |_| json!({"ok": true})).await;
    let serving = serve(
        &runtime,
        HttpConfig::default(),
        vec![Route::new("GET", "/limited", "gw_limited")
            .unwrap()
            .with_throttle(1, 1)],
    )
    .await;
    let first = curl(url(&serving, "/limited"), vec![]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json(), json!({"ok": true}));
    let second = curl(url(&serving, "/limited"), vec![]).await;
    assert_eq!(second.status, 429);
    assert_eq!(second.json(), json!({"message": "Too Many Requests"}));
    assert_eq!(second.header("retry-after"), ["1"]);
    finish(serving, runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_404_and_large_bodies_413() {
    let runtime = Runtime::default();
    register(&runtime, "gw_echo", SECOND, |event| event["body"].clone()).await;
    let serving = serve(
        &runtime,
        HttpConfig::default().with_gateway_max_request(64),
        vec![
            Route::new("POST", "/echo", "gw_echo").unwrap(),
            Route::new("GET", "/ghost", "gw_not_registered").unwrap(),
        ],
    )
    .await;
    let answer = curl(url(&serving, "/nowhere"), vec![]).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json(), json!({"message": "Not Found"}));
    assert_eq!(answer.header("apigw-requestid").len(), 1);

    let answer = curl(url(&serving, "/echo"), args(&["-d", "small"])).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, b"small");

    let big = "x".repeat(65);
    let answer = curl(url(&serving, "/echo"), args(&["-d", &big])).await;
    assert_eq!(answer.status, 413);
    assert_eq!(
        answer.json(),
        json!({"message": "Request Entity Too Large"})
    );
    // Without a Content-Length, the limit is found while reading.
    let answer = curl(
        url(&serving, "/echo"),
        args(&["-H", "Transfer-Encoding: chunked", "-d", &big]),
    )
    .await;
    assert_eq!(answer.status, 413);

    let answer = curl(url(&serving, "/ghost"), vec![]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json(), json!({"message": "Internal server error"}));
    finish(serving, runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_throttle_is_500_and_function_error_502() {
    let runtime = Runtime::default();
    let throttled = Function::new(
        "gw_throttled",
        handler_fn(|_: Value, _ctx: Context| async move { Ok::<_, FunctionError>(json!(1)) }),
    )
    .with_config(FunctionConfig::default().with_max_concurrency(0));
    runtime.register(throttled).await.unwrap();
    let failing = Function::new(
        "gw_failing",
        handler_fn(
            |_: Value, _ctx: Context| async move { Err::<Value, _>(FunctionError::msg("boom")) },
        ),
    );
    runtime.register(failing).await.unwrap();
    let serving = serve(
        &runtime,
        HttpConfig::default(),
        vec![
            Route::new("GET", "/throttled", "gw_throttled").unwrap(),
            Route::new("GET", "/failing", "gw_failing").unwrap(),
        ],
    )
    .await;
    let answer = curl(url(&serving, "/throttled"), vec![]).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.json(), json!({"message": "Internal server error"}));
    assert_eq!(
        answer.header("x-amzn-ErrorType"),
        ["InternalServerErrorException"]
    );
    let answer = curl(url(&serving, "/failing"), vec![]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json(), json!({"message": "Internal server error"}));
    finish(serving, runtime).await;
}
