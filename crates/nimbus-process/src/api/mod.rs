//! The Lambda Runtime API, one server per instance: each instance's process gets a loopback port
//! of its own (`AWS_LAMBDA_RUNTIME_API`), so the event the executor hands an instance can only
//! be taken by that instance's process. HTTP/1.1 with keep-alive and `TCP_NODELAY` (Nagle's
//! algorithm with delayed ACKs would add tens of milliseconds per invocation).

mod endpoint;
mod routes;
pub(crate) mod wire;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};

pub(crate) use endpoint::{Answer, Delivery, Endpoint, Handles, InitSignal, NextEvent};

/// A running Runtime API server for one instance; dropping it closes the port and every
/// connection.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    accept: AbortHandle,
}

impl Server {
    /// Serves `endpoint` on a new loopback port.
    pub(crate) async fn start(endpoint: Arc<Endpoint>) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(accept_loop(listener, endpoint)).abort_handle();
        Ok(Self { addr, accept })
    }

    /// The address the instance's runtime talks to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Aborting the accept loop drops its set of connections, which aborts them all.
        self.accept.abort();
    }
}

/// Connections one instance may hold open: real clients use one to five (Node.js's pool).
pub(crate) const MAX_CONNECTIONS: usize = 16;

async fn accept_loop(listener: TcpListener, endpoint: Arc<Endpoint>) {
    let mut connections = JoinSet::new();
    let mut warned = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if connections.len() >= MAX_CONNECTIONS => {
                    // Closed at once: a runtime cannot take the host's file descriptors.
                    drop(stream);
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(
                            limit = MAX_CONNECTIONS,
                            "a runtime opened too many Runtime API connections; refusing more"
                        );
                    }
                }
                Ok((stream, _)) => {
                    // Without it, each small answer waits for the client's delayed ACK.
                    let _ = stream.set_nodelay(true);
                    let endpoint = Arc::clone(&endpoint);
                    connections.spawn(async move {
                        let service = service_fn(move |request| {
                            routes::handle(Arc::clone(&endpoint), request)
                        });
                        // A connection that breaks is the client's business; a runtime that
                        // died is noticed through its process.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(%error, "the Runtime API could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
