//! The HTTP side: binding, the accept loop and graceful shutdown; `routes` says what each path
//! answers (the formats themselves are in `crate::exposition`).
//!
//! Connections go through an [`Acceptor`]: plain TCP is [`PlainTcp`], TLS (rustls, from
//! `--web.config.file`) is [`tls::Tls`]. hyper answers a malformed request itself with a
//! 4xx and closes that connection; nothing here panics on input. What hyper would drop without
//! a word gets Go's answer instead: an HTTP/2 preface on the plain port (400 in HTTP/1.1), plain
//! HTTP on the TLS port (Go's `Client sent an HTTP request to an HTTPS server.`).
//!
//! Every edge a client controls has a bound ([`Limits`]): open connections (past the cap a new
//! one waits in the kernel's listen backlog, as Prometheus' own `--web.max-connections` does),
//! the time to send request headers, and the time a response may stall on a client that does
//! not read. Concurrent scrapes are bounded in `routes` (`--web.max-requests`).
pub mod io;
pub mod routes;
pub mod tls;
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
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

pub use routes::App;

use crate::config::ListenAddress;

/// Turns an accepted TCP connection into the stream HTTP is spoken over. `header_timeout` bounds
/// the wait for the client's first bytes, which an acceptor may read ahead to tell what the
/// client speaks; `app` answers what it reads there that is a request of its own (the HTTP/2
/// preface).
pub trait Acceptor: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(
        &self,
        tcp: TcpStream,
        header_timeout: Duration,
        app: &App,
    ) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

/// Plain HTTP/1.1.
///
/// A client that opens with the HTTP/2 connection preface (prior knowledge, `curl
/// --http2-prior-knowledge`) gets what Go's server answers it: net/http reads `PRI * HTTP/2.0`
/// as a request and hands it to the exporter-toolkit's handler (the configured headers, basic
/// auth), whose ServeMux answers a `*` target with `400 Bad Request` and `Connection: close`, in
/// HTTP/1.1 ([`App::preface_answer`]). hyper would close the connection without a word.
pub struct PlainTcp;

/// The HTTP/2 preface's first line.
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";

impl Acceptor for PlainTcp {
    type Stream = io::Rewind<TcpStream>;
    async fn accept(
        &self,
        mut tcp: TcpStream,
        header_timeout: Duration,
        app: &App,
    ) -> std::io::Result<io::Rewind<TcpStream>> {
        // Decided at the first byte that leaves the preface (`G` of a GET), or the whole line.
        let decided =
            |h: &[u8]| h.len() >= H2_PREFACE_LINE.len() || !H2_PREFACE_LINE.starts_with(h);
        let head = io::read_head(&mut tcp, decided, header_timeout).await?;
        if head.starts_with(H2_PREFACE_LINE) {
            io::answer_and_close(tcp, &app.preface_answer().await).await;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "an HTTP/2 preface: answered in HTTP/1.1, which this server speaks",
            ));
        }
        Ok(io::Rewind::new(head, tcp))
    }
}

/// The bounds of the serving side.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `--web.max-connections`: connections open at once; 0 for no limit. Past it, new
    /// connections are not accepted until one closes: they wait in the listen backlog.
    pub max_connections: usize,
    /// A client has this long to send its request headers (slow clients hold no task forever).
    pub header_read_timeout: Duration,
    /// A response that makes no progress for this long (a client that does not read) is
    /// dropped with its connection.
    pub write_timeout: Duration,
}

/// `--web.max-connections`' default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

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

/// Serves `app` on `listener` with the default [`Limits`] until `shutdown` resolves.
pub async fn serve<A: Acceptor>(
    listener: TcpListener,
    acceptor: Arc<A>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_with(listener, acceptor, app, Limits::default(), shutdown).await
}

/// Waits for a connection slot (when connections are capped), then for a connection.
async fn accept_slot(
    listener: &TcpListener,
    slots: &Option<Arc<Semaphore>>,
) -> (
    std::io::Result<(TcpStream, std::net::SocketAddr)>,
    Option<OwnedSemaphorePermit>,
) {
    let permit = match slots {
        Some(s) => {
            let s = s.clone();
            let permit = match s.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    log::debug!("connection limit reached: new connections wait");
                    s.acquire_owned().await.expect("the slots are never closed")
                }
            };
            Some(permit)
        }
        None => None,
    };
    (listener.accept().await, permit)
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves, then lets requests in
/// progress finish (up to a grace period).
pub async fn serve_with<A: Acceptor>(
    listener: TcpListener,
    acceptor: Arc<A>,
    app: Arc<App>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let slots =
        (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            (accepted, slot) = accept_slot(&listener, &slots) => {
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
                let limits = limits.clone();
                conns.spawn(async move {
                    connection(acceptor, app, &limits, tcp, peer, stop).await;
                    drop(slot);
                });
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
    limits: &Limits,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let stream = match acceptor.accept(tcp, limits.header_read_timeout, &app).await {
        Ok(s) => s,
        Err(e) => {
            log::debug!("{peer}: not served: {e}");
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
        .header_read_timeout(limits.header_read_timeout)
        // A client that shuts its writing side after its request still gets the answer (hyper
        // would otherwise close at the end of the stream, before answering), as from Go.
        .half_close(true);
    let stream = io::WriteTimeout::new(stream, limits.write_timeout);
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
