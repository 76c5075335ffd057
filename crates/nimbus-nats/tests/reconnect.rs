//! The connection to NATS cut in the middle of a mapping's run: the client reconnects, and
//! nothing is lost. The adapter talks to the server through a TCP proxy in this test, which
//! drops every connection at once (NATS has no `CLIENT KILL`, and the shared server is not
//! restarted); a binary of its own, so that the cut hits no other test.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_nats::NatsQueue;
use nimbus_sources::conformance;
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
    let connections_before = proxy.accepted.load(Ordering::SeqCst);
    // Once some work is done, cut the adapter's connection.
    let duplicates = conformance::mapping_survives(queue.clone(), 300, || async {
        assert!(proxy.cut() >= 1, "the adapter's connection was cut");
    })
    .await
    .unwrap();
    eprintln!("{duplicates} duplicate handlings after the cut");
    assert!(
        proxy.accepted.load(Ordering::SeqCst) > connections_before,
        "the client reconnected"
    );
    let stats = queue.queue_stats().await.unwrap();
    assert_eq!(
        stats.backlog(),
        0,
        "every message deleted in the end: {stats:?}"
    );
}
