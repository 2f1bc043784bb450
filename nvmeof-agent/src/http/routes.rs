//! What each path answers: the telemetry path (0.0.4 text, OpenMetrics or protobuf, as the
//! `Accept` header asks), `/healthz`, a small landing page at `/`, 404 elsewhere, 405 for methods
//! other than GET and HEAD. Paths are compared percent-decoded, as Go's ServeMux compares them
//! (`/metric%73` is the telemetry path). A scrape that accepts gzip gets it, as from
//! node_exporter. Past `--web.max-requests` scrapes at once, the telemetry path answers 503, as
//! node_exporter's does (promhttp's `MaxRequestsInFlight`).
use http_body_util::Full;
use hyper::body::Bytes;
use std::io::Write as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CONNECTION,
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;

use super::webconfig::BasicAuth;
use crate::bpf::io::slow::{self, SlowLog};
use crate::collector::Detail;
use crate::exposition::{self, openmetrics, protobuf, text, Format};
use crate::scrape::{deadline_from_scrape_timeout, Scraper, Selection};

/// How long the scraper waits for the page, in seconds; Prometheus sends it with every scrape.
const SCRAPE_TIMEOUT_HEADER: &str = "x-prometheus-scrape-timeout-seconds";

pub type Body = Full<Bytes>;

/// The state every request sees.
pub struct App {
    scraper: Scraper,
    telemetry_path: String,
    /// Basic auth from `--web.config.file`: every path asks for it when set. Swapped whole on a
    /// reload (SIGHUP); a request checks against the one in force when it came.
    auth: RwLock<Option<Arc<BasicAuth>>>,
    /// `http_server_config.headers` from `--web.config.file`: set on every response, as
    /// exporter-toolkit sets them before anything else answers. Swapped whole on a reload.
    headers: RwLock<Arc<HeaderMap>>,
    /// `--metrics.native-only`: protobuf scrapes get native histograms without classic buckets.
    native_only: bool,
    /// `--web.max-requests`: scrapes served at once; `None` for no limit.
    scrapes_in_flight: Option<(usize, Semaphore)>,
    /// The slow commands `/debug/slow` lists; `None` while `--trace.slower-than` is off.
    slow: Option<Arc<SlowLog>>,
}

/// `--web.max-requests`' default, node_exporter's.
pub const DEFAULT_MAX_REQUESTS: usize = 40;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Whether an `Accept-Encoding` value accepts gzip: listed (or `*`) without `q=0`.
fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        if !coding.eq_ignore_ascii_case("gzip") && coding != "*" {
            return false;
        }
        let refused = parts.any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("q")
                    && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            })
        });
        !refused
    })
}

/// gzip at the fastest level: metrics pages compress about tenfold even so, and a scrape's CPU
/// time matters more on a busy node than the last bytes.
fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    e.write_all(body)?;
    e.finish()
}

/// The query parameters the metrics path reads.
#[derive(Debug, Default, PartialEq)]
struct Params {
    /// node_exporter's `collect[]` and `exclude[]`.
    collect: Vec<String>,
    exclude: Vec<String>,
    /// `controller`: the controllers to show per queue (`crate::collector::Detail`).
    controller: Vec<String>,
}

/// The values of node_exporter's `collect[]` and `exclude[]` query parameters and of
/// `controller` (their names percent-encoded or not), from the first [`MAX_COLLECTOR_PARAMS`]
/// parameters; other parameters and undecodable ones are ignored, as Go's form parsing skips
/// what it cannot read.
fn query_params(query: &str) -> Params {
    let mut params = Params::default();
    for pair in query.split('&').take(MAX_COLLECTOR_PARAMS) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (percent_decode(k), percent_decode(v)) else {
            continue;
        };
        let v = String::from_utf8_lossy(&v).into_owned();
        match k.as_slice() {
            b"collect[]" => params.collect.push(v),
            b"exclude[]" => params.exclude.push(v),
            b"controller" => params.controller.push(v),
            _ => {}
        }
    }
    params
}

/// `/debug/slow`'s `since` (the last sequence number the reader saw, 0 by default) and `limit`
/// ([`SLOW_LIMIT_DEFAULT`], at most the log's capacity). Values that do not parse keep the
/// default.
fn slow_params(query: &str) -> (u64, usize) {
    let (mut since, mut limit) = (0, SLOW_LIMIT_DEFAULT);
    for pair in query.split('&').take(MAX_COLLECTOR_PARAMS) {
        match pair.split_once('=') {
            Some(("since", v)) => since = v.parse().unwrap_or(since),
            Some(("limit", v)) => limit = v.parse().unwrap_or(limit),
            _ => {}
        }
    }
    (since, limit.min(slow::LOG_CAPACITY))
}

/// Slow commands `/debug/slow` lists without a `limit`.
const SLOW_LIMIT_DEFAULT: usize = 100;

/// A bound on the query parameters read: a scraper names a few collectors and controllers, not
/// thousands.
const MAX_COLLECTOR_PARAMS: usize = 64;

/// A path with its percent-escapes decoded, as Go's `URL.Path` (which its ServeMux matches on);
/// `None` for an escape that is not `%` and two hex digits (Go refuses the request with 400).
fn percent_decode(path: &str) -> Option<Vec<u8>> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl App {
    pub fn new(scraper: Scraper, telemetry_path: String) -> Self {
        App {
            scraper,
            telemetry_path,
            auth: RwLock::new(None),
            headers: RwLock::new(Arc::new(HeaderMap::new())),
            native_only: false,
            scrapes_in_flight: Some((DEFAULT_MAX_REQUESTS, Semaphore::new(DEFAULT_MAX_REQUESTS))),
            slow: None,
        }
    }

    /// Lists the slow commands of `log` at `/debug/slow`.
    pub fn with_slow_log(mut self, log: Option<Arc<SlowLog>>) -> Self {
        self.slow = log;
        self
    }

    /// At most `max` scrapes at once (0: no limit); past it the telemetry path answers 503.
    pub fn with_max_requests(mut self, max: usize) -> Self {
        self.scrapes_in_flight = (max > 0).then(|| (max, Semaphore::new(max)));
        self
    }

    /// Leaves the classic buckets of native histograms out of protobuf scrapes.
    pub fn with_native_only(mut self, native_only: bool) -> Self {
        self.native_only = native_only;
        self
    }

    /// Requires basic auth on every path.
    pub fn with_auth(self, auth: Option<BasicAuth>) -> Self {
        self.set_auth(auth);
        self
    }

    /// Replaces the basic auth in force (a reloaded web config), for the requests that follow.
    pub fn set_auth(&self, auth: Option<BasicAuth>) {
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = auth.map(Arc::new);
    }

    /// Sets `headers` on every response.
    pub fn with_headers(self, headers: HeaderMap) -> Self {
        self.set_headers(headers);
        self
    }

    /// Replaces the extra response headers (a reloaded web config).
    pub fn set_headers(&self, headers: HeaderMap) {
        *self.headers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(headers);
    }

    fn auth(&self) -> Option<Arc<BasicAuth>> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn requires_auth(&self) -> bool {
        self.auth().is_some()
    }

    pub fn scraper(&self) -> &Scraper {
        &self.scraper
    }

    pub async fn respond<B>(&self, req: &Request<B>) -> Response<Body> {
        let headers = self
            .headers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut r = self.answer(req).await;
        for (name, value) in headers.iter() {
            r.headers_mut().insert(name, value.clone());
        }
        r
    }

    /// The bytes Go's server sends a client that opens with the HTTP/2 preface: the answer to
    /// a `PRI *` request (no credentials, so 401 when basic auth is on, else Go's ServeMux's 400
    /// for a `*` target), with the configured headers, then the connection closes.
    pub async fn preface_answer(&self) -> Vec<u8> {
        use http_body_util::BodyExt as _;
        let req = Request::builder()
            .method("PRI")
            .uri("*")
            .version(hyper::Version::HTTP_2)
            .body(())
            .expect("a constant request");
        let r = self.respond(&req).await;
        let (parts, body) = r.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(never) => match never {},
        };
        let mut out = Vec::new();
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\n",
            parts.status.as_u16(),
            parts.status.canonical_reason().unwrap_or("")
        );
        for (name, value) in parts.headers.iter() {
            if name != CONNECTION && name != CONTENT_LENGTH {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        let _ = write!(
            out,
            "Connection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        out.extend_from_slice(&body);
        out
    }

    async fn answer<B>(&self, req: &Request<B>) -> Response<Body> {
        // Go parses the request target before anything else looks at the request.
        let Some(path) = percent_decode(req.uri().path()) else {
            return reply(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                "bad request: invalid URL escape in the path\n",
            );
        };
        if let Some(auth) = self.auth() {
            let header = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if !auth.allows(header).await {
                let mut r = reply(
                    StatusCode::UNAUTHORIZED,
                    "text/plain; charset=utf-8",
                    "unauthorized\n",
                );
                r.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"nvmeof-exporter\""),
                );
                return r;
            }
        }
        // Go's ServeMux, behind the auth: a `*` target (`OPTIONS *`, the HTTP/2 preface's
        // `PRI *`) is a bad request.
        if req.uri() == "*" {
            let mut r = reply(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", "");
            r.headers_mut().remove(CONTENT_TYPE);
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "method not allowed: use GET or HEAD\n",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if path == self.telemetry_path.as_bytes() {
            let accept = req
                .headers()
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let gzip = req
                .headers()
                .get_all(ACCEPT_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(accepts_gzip);
            let deadline = req
                .headers()
                .get(SCRAPE_TIMEOUT_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(deadline_from_scrape_timeout)
                .unwrap_or_else(|| self.scraper.default_deadline());
            let params = query_params(req.uri().query().unwrap_or(""));
            let detail = self.scraper.detail(&params.controller);
            let selection = self.scraper.selection(params.collect, params.exclude);
            let (selection, detail) = match (selection, detail) {
                (Ok(s), Ok(d)) => (s, d),
                // node_exporter's answer to a filter it cannot serve.
                (Err(why), _) | (_, Err(why)) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        "text/plain; charset=utf-8",
                        format!("couldn't create filtered metrics handler: {why}\n"),
                    )
                }
            };
            let format = exposition::negotiate(accept);
            return self
                .metrics(format, gzip, deadline, &selection, &detail)
                .await;
        }
        match path.as_slice() {
            b"/healthz" => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok"),
            b"/debug/slow" => match &self.slow {
                Some(log) => {
                    let (since, limit) = slow_params(req.uri().query().unwrap_or(""));
                    let body = slow::to_json(&log.recent(since, limit));
                    reply(StatusCode::OK, "application/json", body)
                }
                None => reply(
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "slow-command tracing is off: start the agent with --trace.slower-than\n",
                ),
            },
            b"/" => {
                let p = html_escape(&self.telemetry_path);
                let page = format!(
                    "<!DOCTYPE html>\n<html><head><title>nvmeof-exporter</title></head><body>\n\
                     <h1>nvmeof-exporter</h1>\n<p>NVMe over Fabrics exporter, version {}.</p>\n\
                     <ul><li><a href=\"{p}\">Metrics</a></li><li><a href=\"/healthz\">Health</a></li>\
                     <li><a href=\"/debug/slow\">Slow commands</a></li></ul>\n\
                     </body></html>\n",
                    env!("CARGO_PKG_VERSION")
                );
                reply(StatusCode::OK, "text/html; charset=utf-8", page)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found\n",
            ),
        }
    }

    async fn metrics(
        &self,
        format: Format,
        gzip: bool,
        deadline: Duration,
        selection: &Selection,
        detail: &Detail,
    ) -> Response<Body> {
        let _slot = match &self.scrapes_in_flight {
            Some((max, slots)) => match slots.try_acquire() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    return reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain; charset=utf-8",
                        format!("Limit of concurrent requests reached ({max}), try again later.\n"),
                    )
                }
            },
            None => None,
        };
        let started = std::time::Instant::now();
        let families = self.scraper.scrape_for(deadline, selection, detail).await;
        let body: Bytes = match format {
            Format::Text => text::encode(&families).into(),
            Format::OpenMetrics => openmetrics::encode(&families).into(),
            Format::Protobuf => protobuf::encode(&families, self.native_only).into(),
        };
        let compressed = if gzip {
            match self::gzip(&body) {
                Ok(c) => Some(c),
                Err(e) => {
                    log::warn!("compressing a scrape: {e}");
                    None
                }
            }
        } else {
            None
        };
        self.scraper.stats().scrape_served(started.elapsed());
        let mut r = match compressed {
            Some(c) => {
                let mut r = reply(StatusCode::OK, format.content_type(), c);
                r.headers_mut()
                    .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            None => reply(StatusCode::OK, format.content_type(), body),
        };
        r.headers_mut()
            .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(percent_decode("/metric%73").unwrap(), b"/metrics");
        assert_eq!(percent_decode("/a%2Fb%2f").unwrap(), b"/a/b/");
        assert_eq!(
            percent_decode("/%E2%9C%93").unwrap(),
            "/\u{2713}".as_bytes()
        );
        for bad in ["/%", "/%7", "/%zz", "/%+1", "/%\u{e9}"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_parameters_are_read_up_to_the_bound() {
        let p =
            query_params("collect%5B%5D=io&controller=nvme3&x=1&controller=nvme%31&exclude[]=tcp");
        assert_eq!(p.collect, ["io"]);
        assert_eq!(p.exclude, ["tcp"]);
        assert_eq!(p.controller, ["nvme3", "nvme1"]);
        // Past the bound nothing more is read: a scraper cannot make the agent hold thousands.
        let many: Vec<String> = (0..1000).map(|i| format!("controller=nvme{i}")).collect();
        let p = query_params(&many.join("&"));
        assert_eq!(p.controller.len(), MAX_COLLECTOR_PARAMS);
        assert_eq!(query_params("controller=%zz"), Params::default());
    }

    #[test]
    fn accept_encoding() {
        for yes in [
            "gzip",
            "GZIP",
            "deflate, gzip;q=0.5",
            "*",
            "br, gzip ; q=1",
            "gzip;q=0.001",
        ] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip; q=0.0",
            "x-gzip2",
        ] {
            assert!(!accepts_gzip(no), "{no}");
        }
    }
}
