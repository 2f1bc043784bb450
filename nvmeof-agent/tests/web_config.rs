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
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    /// A new server certificate from the CA, as PEM (certificate, key).
    fn server_cert(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &self.ca, &self.ca_key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
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
    Pki {
        dir,
        ca: ca_cert,
        ca_key,
    }
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
    let app = Arc::new(
        App::new(scraper, "/metrics".into())
            .with_auth(loaded.auth)
            .with_headers(loaded.headers),
    );
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

    // Plain HTTP to the TLS port gets Go's answer, word for word, not TLS bytes.
    for method in ["GET", "HEAD", "POST", "PUT", "OPTIONS"] {
        let req = format!("{method} /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let (plain, _) =
            common::send(TcpStream::connect(addr).await.unwrap(), req.as_bytes()).await;
        assert_eq!(
            plain,
            "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
            "{method}"
        );
    }
    // And TLS still works after them.
    let ok = tls_get(&pki, addr, false, Some(&basic("prometheus", "s3cret")))
        .await
        .unwrap();
    assert_eq!(status(&ok), 200);
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
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    for (yaml, why) in [
        (format!("{tls}  cipher_suites: [x]\n"), "unknown cipher \"x\""),
        // Known to Go, not to rustls, and nothing else left for TLS 1.2.
        (format!("{tls}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"), "implemented by rustls"),
        (format!("{tls}  curve_preferences: [CurveP999]\n"), "unknown curve \"CurveP999\""),
        (format!("{tls}  min_version: TLS13\n  max_version: TLS12\n"), "above max_version"),
        (format!("{tls}  client_allowed_sans: [a]\n"), "client_allowed_sans"),
        // exporter-toolkit allows five headers and refuses every other.
        ("http_server_config:\n  headers:\n    Content-Type: text/html\n".into(), "\"Content-Type\" can not be configured"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow-from\n".into(), "invalid value for X-Frame-Options"),
        ("http_server_config:\n  http3: true\n".into(), "http3"),
        ("basic_auth_users:\n  alice: plaintext\n".into(), "not a bcrypt hash"),
        // The cost is out of bcrypt's range: every password would be refused at request time.
        ("basic_auth_users:\n  alice: $2y$99$abcdefghijklmnopqrstuu5yHCP.uSvE6E0smBQ32kdJKjLbTDd6G\n".into(), "cost 99, outside bcrypt's 4..=31"),
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n".into(), "missing.crt"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: ca.crt\n".into(), "private key"),
        (format!("{tls}  client_auth_type: VerifyClientCertIfGiven\n"), "VerifyClientCertIfGiven needs client_ca_file"),
        (format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"), "client_ca_file"),
        (format!("{tls}  client_auth_type: Sometimes\n"), "invalid \"Sometimes\""),
        // A CA that checks nothing: exporter-toolkit refuses it too.
        (format!("{tls}  client_ca_file: ca.crt\n"), "client_auth_type is NoClientCert"),
        (format!("{tls}  min_version: TLS10\n"), "TLS10"),
        ("tls_server_config: [".into(), "parsing"),
    ] {
        let path = config(dir, &yaml);
        let err = match WebConfig::load(&path) {
            Ok(_) => panic!("{yaml:?} loaded"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(why), "{yaml:?}: {err}");
    }
    // An empty file is a valid config: no TLS, no auth.
    let loaded = WebConfig::load(&config(dir, "")).unwrap();
    assert!(loaded.tls.is_none() && loaded.auth.is_none() && loaded.headers.is_empty());
}

/// A TLS client for `pki`'s server with the given crypto (suites, groups), versions and
/// client certificate.
fn client(
    pki: &Pki,
    provider: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.dir.path().join("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `pki`'s client certificate, or one from a CA the server does not know.
fn client_cert(pki: &Pki, foreign: bool) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    if foreign {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["stranger".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.self_signed(&key).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        return (vec![cert.der().clone()], key);
    }
    let chain = CertificateDer::pem_file_iter(pki.dir.path().join("client.crt"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.dir.path().join("client.key")).unwrap();
    (chain, key)
}

/// A GET over TLS with `connector`; the error when the handshake or the first read fails.
async fn get_with(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    path: &str,
) -> std::io::Result<(String, rustls::CipherSuite, rustls::ProtocolVersion)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let (_, conn) = tls.get_ref();
    let suite = conn.negotiated_cipher_suite().unwrap().suite();
    let version = conn.protocol_version().unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut out),
    )
    .await
    .expect("an answer within 10 s")?;
    Ok((String::from_utf8_lossy(&out).into_owned(), suite, version))
}

/// A web config as node_exporter users write it, with every exporter-toolkit key this server
/// implements, loads and is obeyed: the one TLS 1.2 suite named is the one negotiated, a
/// client that offers only others (or only TLS 1.3, above max_version) is refused, a client
/// certificate is optional under VerifyClientCertIfGiven but verified when given, and the
/// configured headers are on every answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_exporter_web_config_loads_and_is_obeyed() {
    use rustls::crypto::ring::{cipher_suite, default_provider, kx_group};
    use rustls::version::{TLS12, TLS13};
    let pki = pki();
    let path = config(
        pki.dir.path(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n  \
         min_version: TLS12\n  max_version: TLS12\n  \
         cipher_suites:\n    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n    - TLS_AES_128_GCM_SHA256\n  \
         prefer_server_cipher_suites: true\n  curve_preferences: [CurveP384, X25519]\n\
         http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    \
         X-Content-Type-Options: nosniff\n    Strict-Transport-Security: max-age=31536000\n    \
         Content-Security-Policy: \"\"\n",
    );
    let (addr, _fixture) = serve(&path).await;
    let any = client(&pki, default_provider(), &[&TLS13, &TLS12], None);

    let (answer, suite, version) = get_with(&any, addr, "/metrics").await.unwrap();
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(
        suite,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    );
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    let head = answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    for header in [
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
        "strict-transport-security: max-age=31536000",
    ] {
        assert!(head.contains(header), "{header} missing: {head}");
    }
    // Blank: unset.
    assert!(!head.contains("content-security-policy"), "{head}");
    // On every answer, a 404 too.
    let (missing, _, _) = get_with(&any, addr, "/nowhere").await.unwrap();
    assert_eq!(status(&missing), 404);
    assert!(
        missing
            .to_ascii_lowercase()
            .contains("x-frame-options: deny"),
        "{missing}"
    );

    // The client certificate is optional, and verified when given.
    let with_cert = client(
        &pki,
        default_provider(),
        &[&TLS12],
        Some(client_cert(&pki, false)),
    );
    let (answer, _, _) = get_with(&with_cert, addr, "/metrics").await.unwrap();
    assert_eq!(status(&answer), 200, "{answer}");
    let stranger = client(
        &pki,
        default_provider(),
        &[&TLS12],
        Some(client_cert(&pki, true)),
    );
    assert!(
        get_with(&stranger, addr, "/metrics").await.is_err(),
        "an unknown CA's certificate passed"
    );

    // Only other TLS 1.2 suites, only TLS 1.3, only a curve not configured: refused.
    let mut other_suite = default_provider();
    other_suite.cipher_suites = vec![cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384];
    let other_suite = client(&pki, other_suite, &[&TLS12], None);
    assert!(get_with(&other_suite, addr, "/metrics").await.is_err());
    let tls13_only = client(&pki, default_provider(), &[&TLS13], None);
    assert!(get_with(&tls13_only, addr, "/metrics").await.is_err());
    let mut p256 = default_provider();
    p256.kx_groups = vec![kx_group::SECP256R1];
    let p256 = client(&pki, p256, &[&TLS12], None);
    assert!(get_with(&p256, addr, "/metrics").await.is_err());
}

/// RequireAnyClientCert wants a certificate but not one a CA vouches for (Go's meaning);
/// RequestClientCert asks and takes whatever comes, nothing included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_client_certificates_as_go_asks_for_them() {
    use rustls::crypto::ring::default_provider;
    use rustls::version::TLS12;
    let pki = pki();
    let base = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  max_version: TLS12\n";
    let (addr, _fixture) = serve(&config(
        pki.dir.path(),
        &format!("{base}  client_auth_type: RequireAnyClientCert\n"),
    ))
    .await;
    let stranger = client(
        &pki,
        default_provider(),
        &[&TLS12],
        Some(client_cert(&pki, true)),
    );
    let (answer, _, _) = get_with(&stranger, addr, "/metrics").await.unwrap();
    assert_eq!(status(&answer), 200, "{answer}");
    let none = client(&pki, default_provider(), &[&TLS12], None);
    assert!(
        get_with(&none, addr, "/metrics").await.is_err(),
        "no certificate passed"
    );

    let (addr, _fixture) = serve(&config(
        pki.dir.path(),
        &format!("{base}  client_auth_type: RequestClientCert\n"),
    ))
    .await;
    for cert in [
        None,
        Some(client_cert(&pki, true)),
        Some(client_cert(&pki, false)),
    ] {
        let c = client(&pki, default_provider(), &[&TLS12], cert);
        let (answer, _, _) = get_with(&c, addr, "/metrics").await.unwrap();
        assert_eq!(status(&answer), 200, "{answer}");
    }
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

/// The certificate a new TLS connection is served.
async fn served_certificate(pki: &Pki, addr: SocketAddr) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector(pki, false).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Connects until the served certificate is `want` (the files are looked at once a second at
/// most), for up to 5 s.
async fn until_served(pki: &Pki, addr: SocketAddr, want: &[u8]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if served_certificate(pki, addr).await == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not served within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// cert-manager rotates the files in place; Kubernetes swaps them by rename. Either way new
/// connections get the new certificate without a restart or SIGHUP, and a broken rotation keeps
/// the certificate in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_served_to_new_connections() {
    let pki = pki();
    let dir = pki.dir.path();
    let path = config(
        dir,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    );
    let (addr, _fixture) = serve(&path).await;
    let first = der(&std::fs::read_to_string(dir.join("server.crt")).unwrap());
    assert_eq!(served_certificate(&pki, addr).await, first);

    // In place.
    let (cert, key) = pki.server_cert();
    std::fs::write(dir.join("server.crt"), &cert).unwrap();
    std::fs::write(dir.join("server.key"), &key).unwrap();
    until_served(&pki, addr, &der(&cert)).await;

    // Broken: the certificate in force stays, connections still succeed.
    std::fs::write(
        dir.join("server.crt"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert_eq!(served_certificate(&pki, addr).await, der(&cert));
    }

    // By rename, as a secret volume swaps its files.
    let (cert, key) = pki.server_cert();
    std::fs::write(dir.join("new.crt"), &cert).unwrap();
    std::fs::write(dir.join("new.key"), &key).unwrap();
    std::fs::rename(dir.join("new.key"), dir.join("server.key")).unwrap();
    std::fs::rename(dir.join("new.crt"), dir.join("server.crt")).unwrap();
    until_served(&pki, addr, &der(&cert)).await;
}

/// The HTTP/2 preface goes through the web config as any request does in Go (exporter-toolkit's
/// handler sets the headers and checks basic auth before the ServeMux answers `*` with 400): with
/// users configured it gets 401, with headers configured it carries them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http2_preface_gets_the_configured_headers_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let headers_only = config(
        dir.path(),
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
    );
    let (addr, _f) = serve(&headers_only).await;
    let (answer, _) = common::send(TcpStream::connect(addr).await.unwrap(), &preface).await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer:?}"
    );
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nx-frame-options: deny\r\n"),
        "{answer:?}"
    );
    assert!(lower.contains("\r\nconnection: close\r\n"), "{answer:?}");

    let with_users = config(
        dir.path(),
        &format!(
            "basic_auth_users:\n  prometheus: {}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            hash("secret")
        ),
    );
    let (addr, _f) = serve(&with_users).await;
    let (answer, _) = common::send(TcpStream::connect(addr).await.unwrap(), &preface).await;
    assert!(
        answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{answer:?}"
    );
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("\r\nwww-authenticate: basic"), "{answer:?}");
    assert!(
        lower.contains("\r\nx-frame-options: deny\r\n"),
        "{answer:?}"
    );
    // The server goes on serving, with credentials.
    let ok = exchange(
        TcpStream::connect(addr).await.unwrap(),
        Some(&basic("prometheus", "secret")),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok:?}");
}
