//! The HTTP side: binding, the accept loop and graceful shutdown; `routes` says what each path
//! answers (the formats themselves are in `crate::exposition`).
//!
//! Connections go through an [`Acceptor`]: plain TCP is [`PlainTcp`], TLS (rustls, from
//! `--web.config.file`) is [`webconfig::Tls`]. hyper answers a malformed request itself with a
//! 4xx and closes that connection; nothing here panics on input.
pub mod routes;
pub mod webconfig;

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use routes::App;

use crate::config::ListenAddress;

/// Turns an accepted TCP connection into the stream HTTP is spoken over.
pub trait Acceptor: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self, tcp: TcpStream) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

/// Plain HTTP.
pub struct PlainTcp;

impl Acceptor for PlainTcp {
    type Stream = TcpStream;
    async fn accept(&self, tcp: TcpStream) -> std::io::Result<TcpStream> {
        Ok(tcp)
    }
}

/// A client has this long to send its request headers (slow clients hold no task forever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, requests in progress get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Binds the listen address; `:PORT` means every address, IPv6 and IPv4 where the host has both.
pub async fn bind(addr: &ListenAddress) -> anyhow::Result<TcpListener> {
    match &addr.host {
        None => match TcpListener::bind((Ipv6Addr::UNSPECIFIED, addr.port)).await {
            Ok(l) => Ok(l),
            // A host without IPv6 still serves IPv4.
            Err(_) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, addr.port))
                .await
                .with_context(|| format!("listening on {addr}")),
        },
        Some(host) => TcpListener::bind((host.as_str(), addr.port))
            .await
            .with_context(|| format!("listening on {addr}")),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in progress finish
/// (up to a grace period).
pub async fn serve<A: Acceptor>(
    listener: TcpListener,
    acceptor: Arc<A>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        log::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, app, stop) = (acceptor.clone(), app.clone(), stop_rx.clone());
                conns.spawn(connection(acceptor, app, tcp, peer, stop));
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        log::warn!(
            "{} connections still open after {SHUTDOWN_GRACE:?}; closing them",
            conns.len()
        );
    }
    Ok(())
}

async fn connection<A: Acceptor>(
    acceptor: Arc<A>,
    app: Arc<App>,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let stream = match acceptor.accept(tcp).await {
        Ok(s) => s,
        Err(e) => {
            log::debug!("{peer}: handshake failed: {e}");
            return;
        }
    };
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.respond(&req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                log::debug!("{peer}: {e}");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
