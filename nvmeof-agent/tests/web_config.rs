//! `--web.config.file`: the server behind TLS (server certificate, then client certificates) and
//! basic auth, with certificates made by the test and a real TLS client; and configs that must
//! not load.
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::status;
use nvmeof_agent::http::webconfig::WebConfig;
use nvmeof_agent::http::{self, App};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca_cert, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(vec!["prometheus".to_owned()]).unwrap();
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client.signed_by(&client_key, &ca_cert, &ca_key).unwrap();
    let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
    write("ca.crt", ca_cert.pem());
    write("server.crt", server.pem());
    write("server.key", server_key.serialize_pem());
    write("client.crt", client.pem());
    write("client.key", client_key.serialize_pem());
    Pki { dir }
}

/// A bcrypt hash at the lowest cost: the format is what matters here, not the work factor.
fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

fn config(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("web.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Serves the 6.1 fixture tree with the web config at `path`; the server stops with the test.
async fn serve(path: &Path) -> (SocketAddr, common::Fixture) {
    let fixture = common::sysfs_6_1();
    let scraper = common::scraper(&fixture.root, &["--collector.timeout=10s"]);
    let loaded = WebConfig::load(path).unwrap();
    let app = Arc::new(App::new(scraper, "/metrics".into()).with_auth(loaded.auth));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let never = std::future::pending::<()>();
    match loaded.tls {
        Some(tls) => tokio::spawn(http::serve(listener, Arc::new(tls), app, never)),
        None => tokio::spawn(http::serve(listener, Arc::new(http::PlainTcp), app, never)),
    };
    (addr, fixture)
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: S, auth: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req =
        format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\r\n");
    // What was read counts, however the stream ended (see common::send).
    common::send(s, req.as_bytes()).await.0
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A TLS client trusting the test CA, with the client certificate when `client_cert`.
fn connector(pki: &Pki, client_cert: bool) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.dir.path().join("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = if client_cert {
        let chain = CertificateDer::pem_file_iter(pki.dir.path().join("client.crt"))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(pki.dir.path().join("client.key")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_get(
    pki: &Pki,
    addr: SocketAddr,
    client_cert: bool,
    auth: Option<&str>,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector(pki, client_cert).connect(name, tcp).await?;
    Ok(exchange(tls, auth).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth() {
    let pki = pki();
    let path = config(
        pki.dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: {}\n",
            hash("s3cret")
        ),
    );
    let (addr, _fixture) = serve(&path).await;

    let ok = tls_get(&pki, addr, false, Some(&basic("prometheus", "s3cret")))
        .await
        .unwrap();
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(ok.contains("nvmeof_subsystem_live_paths"), "{ok}");
    // Asked again: the remembered check gives the same answer.
    let again = tls_get(&pki, addr, false, Some(&basic("prometheus", "s3cret")))
        .await
        .unwrap();
    assert_eq!(status(&again), 200);
    // The scheme is case-insensitive (RFC 7617).
    let lower = basic("prometheus", "s3cret").replacen("Basic", "basic", 1);
    let lower = tls_get(&pki, addr, false, Some(&lower)).await.unwrap();
    assert_eq!(status(&lower), 200, "{lower}");

    for auth in [
        None,
        Some(basic("prometheus", "wrong")),
        Some(basic("nobody", "s3cret")),
        Some("Basic !!not-base64!!".to_owned()),
        Some("Bearer s3cret".to_owned()),
    ] {
        let answer = tls_get(&pki, addr, false, auth.as_deref()).await.unwrap();
        assert_eq!(status(&answer), 401, "{auth:?}: {answer}");
        assert!(
            answer.contains("WWW-Authenticate: Basic realm=\"nvmeof-exporter\"")
                || answer.contains("www-authenticate: Basic realm=\"nvmeof-exporter\""),
            "{answer}"
        );
        assert!(!answer.contains("nvmeof_subsystem"), "{answer}");
    }

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = exchange(TcpStream::connect(addr).await.unwrap(), None).await;
    assert!(!plain.starts_with("HTTP/"), "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_configured() {
    let pki = pki();
    let path = config(
        pki.dir.path(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
         min_version: TLS13\n",
    );
    let (addr, _fixture) = serve(&path).await;
    let with = tls_get(&pki, addr, true, None).await.unwrap();
    assert_eq!(status(&with), 200, "{with}");
    // Without one the handshake, or the first read after it (TLS 1.3 sends the server's
    // verdict on the client certificate after the client's Finished), fails.
    match tls_get(&pki, addr, false, None).await {
        Err(_) => {}
        Ok(answer) => assert_eq!(status(&answer), 0, "{answer}"),
    }
}

#[test]
fn configs_that_must_not_load_say_why() {
    let pki = pki();
    let dir = pki.dir.path();
    for (yaml, why) in [
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [x]\n", "cipher_suites"),
        ("http_server_config:\n  http2: false\n", "http_server_config"),
        ("basic_auth_users:\n  alice: plaintext\n", "not a bcrypt hash"),
        // The cost is out of bcrypt's range: every password would be refused at request time.
        ("basic_auth_users:\n  alice: $2y$99$abcdefghijklmnopqrstuu5yHCP.uSvE6E0smBQ32kdJKjLbTDd6G\n", "cost 99, outside bcrypt's 4..=31"),
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n", "missing.crt"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: ca.crt\n", "private key"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: VerifyClientCertIfGiven\n", "VerifyClientCertIfGiven"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n", "client_ca_file"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS10\n", "TLS10"),
        ("tls_server_config: [", "parsing"),
    ] {
        let path = config(dir, yaml);
        let err = match WebConfig::load(&path) {
            Ok(_) => panic!("{yaml:?} loaded"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(why), "{yaml:?}: {err}");
    }
    // An empty file is a valid config: no TLS, no auth.
    let loaded = WebConfig::load(&config(dir, "")).unwrap();
    assert!(loaded.tls.is_none() && loaded.auth.is_none());
}

/// Serves the 6.1 fixture tree over plain HTTP with the web config at `path`, on a runtime of its
/// own with two workers (as on a two-core node), so that the clients' runtime does not share its
/// threads. The server thread ends with the test process.
fn serve_on_own_runtime(path: &Path) -> (SocketAddr, common::Fixture) {
    let fixture = common::sysfs_6_1();
    let scraper = common::scraper(&fixture.root, &["--collector.timeout=10s"]);
    let loaded = WebConfig::load(path).unwrap();
    let app = Arc::new(App::new(scraper, "/metrics".into()).with_auth(loaded.auth));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            let never = std::future::pending::<()>();
            http::serve(listener, Arc::new(http::PlainTcp), app, never).await
        })
    });
    (addr, fixture)
}

/// A flood of wrong passwords (16 clients at once) neither delays a scrape whose credentials
/// were checked before nor a request without credentials: bcrypt runs off the async workers,
/// a bounded number at a time, and the cache's lock is not held across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_does_not_delay_checked_scrapes() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    // Cost 8: tens of milliseconds per check in a test build, so that 16 clients keep bcrypt
    // busy all along.
    let started = Instant::now();
    let hashed = bcrypt::hash("s3cret", 8).unwrap();
    let one_bcrypt = started.elapsed();
    let path = config(
        dir.path(),
        &format!("basic_auth_users:\n  prometheus: {hashed}\n"),
    );
    let (addr, _fixture) = serve_on_own_runtime(&path);
    let good = basic("prometheus", "s3cret");
    let first = exchange(TcpStream::connect(addr).await.unwrap(), Some(&good)).await;
    assert_eq!(status(&first), 200, "{first}");

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for client in 0..16 {
        let (stop, refused) = (stop.clone(), refused.clone());
        flood.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let wrong = basic("prometheus", &format!("guess-{client}-{n}"));
                let Ok(tcp) = TcpStream::connect(addr).await else {
                    continue;
                };
                if status(&exchange(tcp, Some(&wrong)).await) == 401 {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        });
    }
    // Let the flood fill the queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst = Duration::ZERO;
    for _ in 0..3 {
        let t = Instant::now();
        let cached = exchange(TcpStream::connect(addr).await.unwrap(), Some(&good)).await;
        assert_eq!(status(&cached), 200);
        worst = worst.max(t.elapsed());
        let t = Instant::now();
        let none = exchange(TcpStream::connect(addr).await.unwrap(), None).await;
        assert_eq!(status(&none), 401);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while flood.join_next().await.is_some() {}
    let refused = refused.load(Ordering::Relaxed);
    eprintln!("one bcrypt {one_bcrypt:?}; worst answer under the flood {worst:?}; {refused} wrong passwords refused");
    assert!(refused >= 16, "the flood ran: {refused} refusals");
    assert!(
        worst < Duration::from_secs(1),
        "a checked scrape or a request without credentials took {worst:?} under the flood"
    );
}
