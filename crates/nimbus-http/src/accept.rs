//! The accept loop: a task per connection, so that stopping can first let the requests in
//! flight be answered and then close the connections still open (a stalled upload, the caller
//! of a long invocation) when the grace runs out.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How long a connection may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// When to stop accepting (and finish what is in flight), and when to close what is left.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stopping {
    pub(crate) accept: CancellationToken,
    pub(crate) close: CancellationToken,
}

/// Serves `app` on `listener` until `stopping.accept`; resolves when every connection has
/// ended, which `stopping.close` forces.
pub(crate) async fn serve(listener: TcpListener, app: Router, stopping: Stopping) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Small request/response pairs: do not wait for Nagle.
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(connection(tcp, peer, app.clone(), stopping.clone()));
                }
                Err(error) => pause_after(&error).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopping.accept.cancelled() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// After a failed accept: nothing for a connection the peer gave up (reset, aborted); a pause
/// for anything else (out of file descriptors), as axum does, rather than spinning.
async fn pause_after(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "nimbus-http could not accept a connection; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One HTTP/1.1 connection; the peer address is the gateway events' source IP.
async fn connection(tcp: tokio::net::TcpStream, peer: SocketAddr, app: Router, stopping: Stopping) {
    let service = app.map_request(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    // A connection that sends no complete request head in time is closed: an idle socket (a
    // browser's preconnect, a slow client) cannot hold the server open when it stops.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stopping.accept.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = connection.as_mut() => {}
        () = stopping.close.cancelled() => {}
    }
}
