//! Tools that talk to a running agent over its HTTP port: `nvmeof-exporter trace` follows its
//! slow commands, `nvmeof-exporter top` shows its controllers and queues live. They read what the agent serves, as a person with `curl` would, and never
//! load programs themselves: one agent per node owns the maps.
pub mod top;
pub mod trace;

use std::time::Duration;

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

pub use crate::config::DEFAULT_AGENT;

/// The most a tool reads of one answer: `/debug/slow` at its limit is some hundreds of KiB;
/// `/metrics?controller=all` at 8 controllers × 64 queues about 4 MiB with classic buckets.
const MAX_BODY: usize = 8 << 20;

/// `GET http://{agent}{path}`: the status and the body, within `timeout` for the whole.
pub async fn get(
    agent: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, Bytes)> {
    tokio::time::timeout(timeout, get_inner(agent, path))
        .await
        .with_context(|| format!("{agent}{path}: no answer within {timeout:?}"))?
}

async fn get_inner(agent: &str, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = tokio::net::TcpStream::connect(agent)
        .await
        .with_context(|| format!("connecting to the agent at {agent}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    // The connection's task ends with the answer (or with the caller's timeout).
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(hyper::header::HOST, agent)
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let resp = sender
        .send_request(req)
        .await
        .context("sending the request")?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    if status.is_server_error() {
        bail!(
            "{path}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok((status, body))
}
