//! Stopping the server: requests in flight are answered; after `stop_within`'s grace the
//! connections still open are closed, and their invocations still finish in the runtime.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_http::{HttpConfig, Server, Serving};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

/// A function that tells when it starts and waits to be released.
async fn held(runtime: &Runtime, name: &str) -> (mpsc::UnboundedReceiver<()>, Arc<Notify>) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    runtime
        .register(Function::new(
            name,
            handler_fn(move |_: Value, _ctx: Context| {
                let _ = started_tx.send(());
                let gate = Arc::clone(&gate);
                async move {
                    gate.notified().await;
                    Ok::<_, FunctionError>(json!("released"))
                }
            }),
        ))
        .await
        .unwrap();
    (started, release)
}

async fn serve(runtime: &Runtime) -> Serving {
    Server::new(runtime.clone())
        .with_config(HttpConfig::default().with_bind("127.0.0.1:0".parse().unwrap()))
        .bind()
        .await
        .unwrap()
}

fn curl(serving: &Serving, function: &str) -> tokio::process::Child {
    tokio::process::Command::new("curl")
        .args(["-s", "-w", " %{http_code}", "-d", "{}"])
        .arg(format!(
            "http://{}/2015-03-31/functions/{function}/invocations",
            serving.local_addr()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_answers_the_requests_in_flight() {
    let runtime = Runtime::default();
    let (mut started, release) = held(&runtime, "held-answered").await;
    let serving = serve(&runtime).await;
    let client = curl(&serving, "held-answered");
    started.recv().await.unwrap();
    let stopped = tokio::spawn(serving.stop());
    release.notify_one();
    stopped.await.unwrap();
    let out = client.wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"released\" 200");
    runtime.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_within_closes_what_is_left_and_the_invocation_still_finishes() {
    let runtime = Runtime::default();
    let (mut started, release) = held(&runtime, "held-closed").await;
    let serving = serve(&runtime).await;
    let addr = serving.local_addr();
    let client = curl(&serving, "held-closed");
    started.recv().await.unwrap();
    assert!(
        !serving.stop_within(Duration::from_millis(100)).await,
        "the request was still in flight"
    );
    let out = client.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(52),
        "curl: empty reply, the connection was closed"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
    // The invocation was not cancelled with its connection.
    release.notify_one();
    let report = runtime.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.cancelled, 0);
    assert_eq!(runtime.metrics("held-closed").unwrap().successes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_a_request_does_not_hold_stop() {
    let runtime = Runtime::default();
    let serving = serve(&runtime).await;
    let idle = tokio::net::TcpStream::connect(serving.local_addr())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), serving.stop())
        .await
        .expect("stop returns although a connection never sent a request");
    drop(idle);
    runtime.shutdown(Duration::from_secs(1)).await;
}
