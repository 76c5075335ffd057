//! `nimbus bench http`: the Invoke API and the gateway on loopback, beside a bare axum server
//! that answers the same requests with the same bytes, under the same bounded load.
//!
//! The load generator is a small hyper client in this process: `connections` keep-alive
//! connections, each sending its next request when the last answer arrived (a closed loop, so
//! the load is bounded), for a fixed time. The four servers (bare and nimbus, Invoke API and
//! gateway) are measured in turn, `rounds` times interleaved, and each row reports the median
//! round: on a shared machine a single sample says little.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nimbus::http::{HttpConfig, Route, Server};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};
use serde_json::Value;

use super::stats::{median, round1, Row};

/// What every server answers with.
const ANSWER: &str = r#"{"ok":true}"#;
/// The path of the Invoke API's request.
const INVOKE_PATH: &str = "/2015-03-31/functions/bench/invocations";
/// The path of the gateway's request.
const GATEWAY_PATH: &str = "/hello/bench";

/// How much load, for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpSizes {
    pub(crate) connections: usize,
    pub(crate) run: Duration,
    pub(crate) rounds: usize,
}

/// One measured round: requests per second and the latency histogram (ns).
struct Round {
    requests: u64,
    took: Duration,
    latency: Histogram<u64>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.took.as_secs_f64()
    }
}

/// Runs the scenario: two rows (nimbus, bare) for the Invoke API and two for the gateway.
pub(crate) async fn run(sizes: HttpSizes) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let runtime = Runtime::default();
    let answer: Value = serde_json::from_str(ANSWER)?;
    for name in ["bench", "bench-route"] {
        let answer = answer.clone();
        runtime
            .register(
                Function::new(
                    name,
                    handler_fn(move |_: Value, _ctx: Context| {
                        let answer = answer.clone();
                        async move { Ok::<_, FunctionError>(answer) }
                    }),
                )
                .with_max_concurrency(256),
            )
            .await?;
    }
    let nimbus = Server::new(runtime.clone())
        .with_config(HttpConfig::default().with_bind("127.0.0.1:0".parse()?))
        .route(Route::new("GET", "/hello/{name}", "bench-route")?)
        .bind()
        .await?;
    let bare = bare_server().await?;

    let targets = [
        ("http invoke", "nimbus", nimbus.local_addr(), INVOKE_PATH),
        ("http invoke", "bare axum, same bytes", bare, INVOKE_PATH),
        ("http gateway", "nimbus", nimbus.local_addr(), GATEWAY_PATH),
        ("http gateway", "bare axum, same bytes", bare, GATEWAY_PATH),
    ];
    let mut rounds: Vec<Vec<Round>> = targets.iter().map(|_| Vec::new()).collect();
    // Warm up every server (connections, caches, the function's instances) once, unmeasured.
    for (_, _, addr, path) in &targets {
        load(*addr, path, sizes.connections, sizes.run / 4).await?;
    }
    for _ in 0..sizes.rounds {
        for (i, (_, _, addr, path)) in targets.iter().enumerate() {
            rounds[i].push(load(*addr, path, sizes.connections, sizes.run).await?);
        }
    }
    nimbus.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;

    let mut rows = Vec::new();
    for ((scenario, system, _, _), mut measured) in targets.iter().zip(rounds) {
        measured.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let p99s: Vec<f64> = measured
            .iter()
            .map(|r| r.latency.value_at_quantile(0.99) as f64 / 1e3)
            .collect();
        let middle = &measured[measured.len() / 2];
        let row = Row::throughput(scenario, system, middle.requests, middle.took)
            .with_latency(&middle.latency)
            .with("connections", sizes.connections)
            .with("rounds", sizes.rounds)
            .with("median_p99_us", round1(median(&p99s)));
        rows.push(row);
    }
    // The targets: nimbus at ≥ 70 % of the bare server's requests/s, p99 within 2×.
    for pair in rows.chunks_mut(2) {
        if let [nimbus, bare] = pair {
            let share = nimbus.events_per_sec / bare.events_per_sec;
            let p99 = |r: &Row| r.extra["median_p99_us"].as_f64().unwrap_or(f64::NAN);
            let p99_ratio = p99(nimbus) / p99(bare);
            *nimbus = nimbus
                .clone()
                .with("share_of_bare", round1(share * 100.0))
                .with("p99_vs_bare", (p99_ratio * 100.0).round() / 100.0);
        }
    }
    Ok(rows)
}

/// A bare axum server answering both paths with the same bytes and content type.
async fn bare_server() -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let answer = || async {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            ANSWER,
        )
    };
    let app = axum::Router::new()
        .route(INVOKE_PATH, post(answer))
        .route("/hello/{name}", get(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// `connections` closed-loop clients against `addr` for `run`.
async fn load(
    addr: SocketAddr,
    path: &'static str,
    connections: usize,
    run: Duration,
) -> Result<Round, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let deadline = start + run;
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(tokio::spawn(client(addr, path, deadline)));
    }
    let mut requests = 0;
    let mut latency = Histogram::<u64>::new(3)?;
    for client in clients {
        let (n, histogram) = client.await?.map_err(|e| e.to_string())?;
        requests += n;
        latency.add(&histogram)?;
    }
    Ok(Round {
        requests,
        took: start.elapsed(),
        latency,
    })
}

type ClientResult = Result<(u64, Histogram<u64>), Box<dyn std::error::Error + Send + Sync>>;

/// One keep-alive connection sending requests until `deadline`; every answer is checked.
async fn client(addr: SocketAddr, path: &'static str, deadline: Instant) -> ClientResult {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut n = 0;
    let method = if path == INVOKE_PATH { "POST" } else { "GET" };
    while Instant::now() < deadline {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .body(Full::new(Bytes::from_static(b"{}")))?;
        let sent = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        histogram.record(sent.elapsed().as_nanos() as u64)?;
        if !status.is_success() || body != ANSWER.as_bytes() {
            return Err(format!("{path}: {status} {}", String::from_utf8_lossy(&body)).into());
        }
        n += 1;
    }
    Ok((n, histogram))
}
