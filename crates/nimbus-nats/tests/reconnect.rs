//! The connection to NATS cut in the middle of a mapping's run: the client reconnects, and
//! nothing is lost. The adapter talks to the server through a TCP proxy in this test, which
//! drops every connection at once (NATS has no `CLIENT KILL`, and the shared server is not
//! restarted); a binary of its own, so that the cut hits no other test.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_nats::NatsQueue;
use nimbus_sources::{BatchResponse, QueueBatch, QueueMapping, QueueMappingConfig, QueueSource};
use support::{url, Names};
use tokio::net::{TcpListener, TcpStream};

/// Forwards connections to the server, and drops them all on [`Proxy::cut`].
struct Proxy {
    address: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    connections: Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>>,
    acceptor: tokio::task::AbortHandle,
}

impl Proxy {
    async fn start() -> Self {
        let server: async_nats::ServerAddr = url().parse().unwrap();
        let target = format!("{}:{}", server.host(), server.port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let connections: Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let acceptor = tokio::spawn({
            let (accepted, connections) = (accepted.clone(), connections.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let forward = tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
                    connections.lock().push(forward.abort_handle());
                }
            }
        })
        .abort_handle();
        Self {
            address,
            accepted,
            connections,
            acceptor,
        }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.address)
    }

    /// Drops every connection; returns how many.
    fn cut(&self) -> usize {
        let connections = std::mem::take(&mut *self.connections.lock());
        for connection in &connections {
            connection.abort();
        }
        connections.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_mid_run_loses_nothing() {
    let Some(names) = Names::new().await else {
        return;
    };
    let proxy = Proxy::start().await;
    let mut config = names
        .config("reconnect")
        .with_ack_wait(Duration::from_secs(2))
        // Answers lost with the connection are given up on after this.
        .with_request_timeout(Duration::from_secs(1));
    config.url = proxy.url();
    let queue = Arc::new(NatsQueue::connect(config).await.unwrap());
    let total = 300;
    for i in 0..total {
        queue.send(format!("m{i}").into()).await.unwrap();
    }
    let runtime = Runtime::default();
    let seen: Arc<parking_lot::Mutex<HashSet<String>>> = Arc::default();
    // The handler publishes how many distinct messages it has seen: the test waits on that.
    let (progress, mut watched) = tokio::sync::watch::channel(0usize);
    let function = runtime
        .register(
            Function::new(
                "consume",
                handler_fn({
                    let (seen, progress) = (seen.clone(), Arc::new(progress));
                    move |batch: QueueBatch, _ctx: Context| {
                        let (seen, progress) = (seen.clone(), progress.clone());
                        async move {
                            // A little work, so the cut lands while batches are in flight.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            let count = {
                                let mut seen = seen.lock();
                                for r in &batch.records {
                                    seen.insert(r.body_str().unwrap_or_default().to_owned());
                                }
                                seen.len()
                            };
                            progress.send_replace(count);
                            Ok::<_, FunctionError>(BatchResponse::success())
                        }
                    }
                }),
            )
            .with_timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let mapping = QueueMapping::start(
        queue.clone(),
        function,
        QueueMappingConfig::new("reconnect")
            .with_poll_wait(Duration::from_millis(500))
            .with_max_concurrency(4)
            .with_initial_concurrency(2),
    )
    .unwrap();
    // Once some work is done, cut the adapter's connection.
    tokio::time::timeout(Duration::from_secs(20), watched.wait_for(|n| *n >= 50))
        .await
        .expect("progress before the cut")
        .unwrap();
    let connections_before = proxy.accepted.load(Ordering::SeqCst);
    assert!(proxy.cut() >= 1, "the adapter's connection was cut");
    tokio::time::timeout(Duration::from_secs(60), watched.wait_for(|n| *n >= total))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "only {} of {total} handled after the cut",
                seen.lock().len()
            )
        })
        .unwrap();
    assert!(
        proxy.accepted.load(Ordering::SeqCst) > connections_before,
        "the client reconnected"
    );
    // Every message was handled at least once. Stop the mapping (batches in flight finish and
    // are acknowledged), then drain what an acknowledgement lost to the cut left pending: a
    // long poll past ack_wait returns it, and after that nothing remains.
    mapping.stop(Duration::from_secs(15)).await;
    loop {
        let left = queue.receive(100, Duration::from_secs(3)).await.unwrap();
        if left.is_empty() {
            break;
        }
        for m in &left {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            assert!(
                seen.lock().contains(&body),
                "{body} came back but was never handled"
            );
        }
        let receipts: Vec<_> = left.iter().map(|m| m.receipt.clone()).collect();
        queue.ack(&receipts).await.unwrap();
    }
    let stats = queue.queue_stats().await.unwrap();
    assert_eq!(
        stats.backlog(),
        0,
        "every message deleted in the end: {stats:?}"
    );
}
