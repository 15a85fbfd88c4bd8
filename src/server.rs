//! Listeners: accept connections, serve HTTP/1.1 and h2c on them with the
//! configured limits, and drain gracefully on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::body::ResponseBody;
use crate::config::ServerConfig;
use crate::proxy::ConnInfo;
use crate::tls::TlsSlot;

/// The HTTP server settings for client connections.
pub fn http_builder(config: &ServerConfig) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        // hyper answers 431 when the head does not fit its read buffer.
        .max_buf_size(config.max_header_bytes.max(8192))
        .max_headers(config.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(20)));
    builder
}

/// Accept and serve until `shutdown` flips, then stop accepting and give
/// open connections `drain` to finish (idle HTTP/1.1 connections close at
/// once, busy ones after their response; HTTP/2 gets a GOAWAY). With `tls`,
/// every connection is a TLS handshake first (bounded by the header read
/// timeout), using whatever config the slot holds at accept time.
pub async fn serve<H, F>(
    listener: TcpListener,
    builder: Builder<TokioExecutor>,
    limits: Limits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<TlsSlot>,
) where
    H: Fn(ConnInfo, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let handshake_timeout = limits.handshake_timeout;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off, don't spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the connection limit: refuse (close) rather than fall over.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: server.max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo { peer, tls: tls.is_some() };
        let handler = handler.clone();
        let service = service_fn(move |req| handler(info, req));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls_config = tls.as_ref().map(|slot| slot.load_full());
        tokio::spawn(async move {
            let result = match tls_config {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
                Some(config) => {
                    let handshake = TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(handshake_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}").into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let open = graceful.count();
    let drain = limits.drain;
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(open, ?drain, "drain timeout reached with connections still open");
    }
}

/// Per-listener limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// How long a TLS handshake may take (the header read timeout).
    pub handshake_timeout: Duration,
    /// How long open connections get to finish after shutdown.
    pub drain: Duration,
}

impl Limits {
    pub fn new(config: &ServerConfig) -> Self {
        Limits {
            max_connections: config.max_connections,
            handshake_timeout: config.header_read_timeout,
            drain: config.drain_timeout,
        }
    }
}
