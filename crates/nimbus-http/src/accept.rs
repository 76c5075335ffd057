//! The accept loop: a task per connection, so that stopping can first let the requests in
//! flight be answered and then close the connections still open (a stalled upload, the caller
//! of a long invocation) when the grace runs out.

use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

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
                // Out of file descriptors and the like: the listener itself is fine.
                Err(error) => tracing::warn!(%error, "nimbus-http could not accept a connection"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopping.accept.cancelled() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One HTTP/1.1 connection; the peer address is the gateway events' source IP.
async fn connection(tcp: tokio::net::TcpStream, peer: SocketAddr, app: Router, stopping: Stopping) {
    let service = app.map_request(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let connection = hyper::server::conn::http1::Builder::new()
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
