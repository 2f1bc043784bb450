//! `tls_server_config`: exporter-toolkit's TLS settings, in Go's words, on rustls with the ring
//! provider (no OpenSSL: the binary still builds static), and the [`Tls`] acceptor built from
//! them, which reads the certificate and key again when their files change.
//!
//! Go's names are kept (`go_names`): `cipher_suites` takes crypto/tls' suite names,
//! `curve_preferences` its curve names, `client_auth_type` its `ClientAuthType` names,
//! `min_version`/`max_version` `TLS12`/`TLS13`.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::SignatureScheme;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde::Deserialize;
use tokio::net::TcpStream;

use super::{io, Acceptor};
use go_names::{versions, ClientAuth, CIPHER_SUITES, CURVE_PREFERENCES};

// A file beside this one, not a folder: `http` stays one module for the dependency graph.
#[path = "tls_go_names.rs"]
mod go_names;

/// `tls_server_config` as the file spells it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsServerConfig {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    /// exporter-toolkit's default is true: the server's order (that of `cipher_suites`) wins.
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    curve_preferences: Vec<String>,
}

/// A client certificate asked for (and required when `mandatory`) but not verified against a
/// CA, as Go's `RequestClientCert` and `RequireAnyClientCert`; the handshake signature is still
/// checked, so the client must hold the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

/// Builds the rustls config the settings describe, reading certificate, key and client CA
/// (paths relative to `dir`, the web config's directory).
fn server_config(t: &TlsServerConfig, dir: &Path) -> anyhow::Result<ServerConfig> {
    let cert_path = dir.join(&t.cert_file);
    let key_path = dir.join(&t.key_file);
    let chain = certs(&cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading the private key in {}", key_path.display()))?;

    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(tls12) = CIPHER_SUITES.read(&t.cipher_suites)? {
        provider.cipher_suites.retain(|s| s.tls13().is_some());
        provider.cipher_suites.extend(tls12);
    }
    if let Some(groups) = CURVE_PREFERENCES.read(&t.curve_preferences)? {
        provider.kx_groups = groups;
    }
    let provider: Arc<CryptoProvider> = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(t)?)
        .context("tls_server_config: versions and cipher suites")?;

    let auth = ClientAuth::parse(t.client_auth_type.as_deref())?;
    let roots = match &t.client_ca_file {
        Some(ca) => {
            if auth == ClientAuth::NoClientCert {
                // exporter-toolkit refuses this too: a CA that checks nothing is a mistake.
                bail!(
                    "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert"
                );
            }
            let mut roots = RootCertStore::empty();
            for c in certs(&dir.join(ca))? {
                roots.add(c).context("adding a client CA")?;
            }
            Some(roots)
        }
        None => None,
    };
    let builder = match auth {
        ClientAuth::NoClientCert => builder.with_no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => builder
            .with_client_cert_verifier(Arc::new(AnyClientCert {
                mandatory: auth == ClientAuth::RequireAnyClientCert,
                hints: roots.as_ref().map(|r| r.subjects()).unwrap_or_default(),
                algorithms: provider.signature_verification_algorithms,
            })),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let roots = roots.with_context(|| {
                format!("tls_server_config.client_auth_type {auth:?} needs client_ca_file")
            })?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if auth == ClientAuth::VerifyClientCertIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder
                .with_client_cert_verifier(verifier.build().context("client certificate verifier")?)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .with_context(|| format!("{} and {}", cert_path.display(), key_path.display()))?;
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// When a file last changed, as far as `stat` tells: a rewrite in place changes size, mtime or
/// ctime, a rename over it (cert-manager's and Kubernetes' secret volumes swap a symlink) the
/// inode.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamps of the files a config is built from (certificate, key, client CA), `None` for one
/// that cannot be stat'ed.
fn stamps(t: &TlsServerConfig, dir: &Path) -> Vec<Option<Stamp>> {
    use std::os::unix::fs::MetadataExt as _;
    let files = [
        Some(&t.cert_file),
        Some(&t.key_file),
        t.client_ca_file.as_ref(),
    ];
    files
        .into_iter()
        .flatten()
        .map(|f| {
            let m = std::fs::metadata(dir.join(f)).ok()?;
            Some(Stamp {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
            })
        })
        .collect()
}

/// What the handshakes are served with, and where it came from.
struct Current {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The config the acceptor serves, to tell whether it was replaced meanwhile.
    config: Arc<ServerConfig>,
    settings: TlsServerConfig,
    dir: PathBuf,
    /// The files' stamps when the config was read.
    stamps: Vec<Option<Stamp>>,
    /// The stamps of a change that did not load: it is not tried (nor logged) again until the
    /// files change once more.
    failed: Option<Vec<Option<Stamp>>>,
}

/// The certificate files are looked at (stat'ed) at most this often, on new connections.
const RECHECK: Duration = Duration::from_secs(1);

/// The TLS acceptor. Certificate, key and client CA are re-read when their files change
/// (exporter-toolkit re-reads them on every handshake; here a `stat` of each, at most once a
/// [`RECHECK`], on new connections), so a rotation in place (cert-manager) needs no restart:
/// connections that follow get the new certificate. A change that does not load (a key that
/// does not match, a file half written) keeps what is in force and is logged once. A reload
/// (SIGHUP) swaps settings and certificates together.
pub struct Tls {
    current: RwLock<Current>,
    /// When the files were last looked at.
    checked: Mutex<Instant>,
}

impl Tls {
    pub(super) fn new(t: &TlsServerConfig, dir: &Path) -> anyhow::Result<Tls> {
        let stamps = stamps(t, dir);
        let config = Arc::new(server_config(t, dir)?);
        Ok(Tls {
            current: RwLock::new(Current {
                acceptor: tokio_rustls::TlsAcceptor::from(config.clone()),
                config,
                settings: t.clone(),
                dir: dir.to_owned(),
                stamps,
                failed: None,
            }),
            checked: Mutex::new(Instant::now()),
        })
    }

    /// Takes `other`'s certificates and settings for the handshakes from now on.
    pub fn replace(&self, other: Tls) {
        let new = other
            .current
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
    }

    /// Re-reads the files when they changed since they were read, at most once a [`RECHECK`].
    fn refresh_if_changed(&self) {
        {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.elapsed() < RECHECK {
                return;
            }
            *checked = Instant::now();
        }
        let (settings, dir, serving) = {
            let c = self.current.read().unwrap_or_else(|e| e.into_inner());
            let now = stamps(&c.settings, &c.dir);
            if now == c.stamps || Some(&now) == c.failed.as_ref() {
                return;
            }
            (c.settings.clone(), c.dir.clone(), c.config.clone())
        };
        // Stamped before reading: a change during the read is seen at the next check.
        let now = stamps(&settings, &dir);
        let built = server_config(&settings, &dir);
        let mut c = self.current.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&c.config, &serving) {
            return; // a reload (or another check) came in between and is newer
        }
        match built {
            Ok(config) => {
                log::info!(
                    "TLS: {} changed: new connections get the new certificate",
                    dir.join(&settings.cert_file).display()
                );
                let config = Arc::new(config);
                c.acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                c.config = config;
                c.stamps = now;
                c.failed = None;
            }
            Err(e) => {
                log::error!("TLS: the certificate files changed but do not load, keeping the certificate in force: {e:#}");
                c.failed = Some(now);
            }
        }
    }
}

/// A client has this long for the TLS handshake (a stalled one holds no task forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the first five bytes of a connection are plain HTTP, by Go's test (crypto/tls
/// `tlsRecordHeaderLooksLikeHTTP`): `GET /`, `HEAD `, `POST `, `PUT /` or `OPTIO`.
fn looks_like_http(head: &[u8]) -> bool {
    HTTP_STARTS.iter().any(|m| head.starts_with(m))
}

const HTTP_STARTS: [&[u8]; 5] = [b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO"];

/// Go's answer to plain HTTP on its TLS port (net/http `Server.serve`), word for word.
const PLAIN_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

impl Acceptor for Tls {
    type Stream = tokio_rustls::server::TlsStream<io::Rewind<TcpStream>>;
    async fn accept(
        &self,
        mut tcp: TcpStream,
        _header_timeout: Duration,
        _app: &super::App,
    ) -> std::io::Result<Self::Stream> {
        self.refresh_if_changed();
        let acceptor = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .acceptor
            .clone();
        let handshake = async {
            // The first bytes tell a TLS record (0x16) from a plain HTTP request: decided at the
            // first byte that starts neither, or at five.
            let decided = |h: &[u8]| h.len() >= 5 || !HTTP_STARTS.iter().any(|m| m.starts_with(h));
            let head = io::read_head(&mut tcp, decided, HANDSHAKE_TIMEOUT).await?;
            if looks_like_http(&head) {
                io::answer_and_close(tcp, PLAIN_HTTP_ANSWER).await;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "plain HTTP on the TLS port: answered as Go does",
                ));
            }
            acceptor.accept(io::Rewind::new(head, tcp)).await
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }
}
