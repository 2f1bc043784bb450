//! `--web.config.file`: TLS and basic auth in the file format of Prometheus' exporter-toolkit,
//! so that one file serves node_exporter and this exporter alike:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # PEM chain; relative paths are relative to this file
//!   key_file: server.key           # PEM key (PKCS#8, PKCS#1 or SEC1)
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (the default)
//!   client_ca_file: ca.crt         # required with RequireAndVerifyClientCert
//!   min_version: TLS12             # or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hash, as `htpasswd -nBC 10` prints it
//! ```
//!
//! Unknown keys are an error (exporter-toolkit reads the file strictly too), and so is a value
//! this subset does not implement, naming it: a setting silently ignored is a security hole.
//! TLS is rustls with the ring provider: no OpenSSL, and the binary still builds static.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use super::Acceptor;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
}

impl WebConfig {
    /// Reads and checks the file: certificates and keys load, hashes are bcrypt.
    pub fn load(path: &Path) -> anyhow::Result<Loaded> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading web config {}", path.display()))?;
        let config: WebConfig = serde_saphyr::from_str(&text)
            .with_context(|| format!("parsing web config {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = match &config.tls_server_config {
            Some(t) => {
                Some(Tls::new(t, dir).with_context(|| format!("web config {}", path.display()))?)
            }
            None => None,
        };
        let auth = if config.basic_auth_users.is_empty() {
            None
        } else {
            Some(
                BasicAuth::new(config.basic_auth_users)
                    .with_context(|| format!("web config {}", path.display()))?,
            )
        };
        Ok(Loaded { tls, auth })
    }
}

/// A checked web config.
pub struct Loaded {
    pub tls: Option<Tls>,
    pub auth: Option<BasicAuth>,
}

/// The TLS acceptor.
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
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

impl Tls {
    fn new(t: &TlsServerConfig, dir: &Path) -> anyhow::Result<Tls> {
        let cert_path = dir.join(&t.cert_file);
        let key_path = dir.join(&t.key_file);
        let chain = certs(&cert_path)?;
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .with_context(|| format!("reading the private key in {}", key_path.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
            None | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
            Some("TLS13") => &[&rustls::version::TLS13],
            Some(v) => bail!("min_version {v:?}: only TLS12 and TLS13 are supported"),
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .context("TLS versions")?;
        let builder = match t.client_auth_type.as_deref() {
            None | Some("NoClientCert") => builder.with_no_client_auth(),
            Some("RequireAndVerifyClientCert") => {
                let ca = t
                    .client_ca_file
                    .as_ref()
                    .context("client_auth_type RequireAndVerifyClientCert needs client_ca_file")?;
                let mut roots = RootCertStore::empty();
                for c in certs(&dir.join(ca))? {
                    roots.add(c).context("adding a client CA")?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .context("client certificate verifier")?;
                builder.with_client_cert_verifier(verifier)
            }
            Some(other) => bail!(
                "client_auth_type {other:?}: only NoClientCert and RequireAndVerifyClientCert are supported"
            ),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .with_context(|| format!("{} and {}", cert_path.display(), key_path.display()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// A client has this long for the TLS handshake (a stalled one holds no task forever).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Acceptor for Tls {
    type Stream = tokio_rustls::server::TlsStream<TcpStream>;
    async fn accept(&self, tcp: TcpStream) -> std::io::Result<Self::Stream> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }
}

/// Basic auth against bcrypt hashes. bcrypt is slow on purpose (tens of ms at cost 10), too
/// slow for every scrape: a successful check is remembered by a SHA-256 of user, password and
/// hash (never the password itself), as exporter-toolkit caches its checks.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashMap<[u8; 32], bool>>,
}

/// Remembered checks at most; the cache starts over beyond (a client cycling passwords cannot
/// grow it without bound).
const AUTH_CACHE_MAX: usize = 1024;

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> anyhow::Result<BasicAuth> {
        for (user, hash) in &users {
            // bcrypt's modular crypt format: $2a$, $2b$ or $2y$, cost, 53 characters of salt and
            // hash: 60 in all.
            let ok =
                hash.len() == 60 && ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p));
            if !ok {
                bail!("basic_auth_users: the hash of {user:?} is not a bcrypt hash");
            }
        }
        Ok(BasicAuth {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether an `Authorization` header value names a user with the right password.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let mut key = Sha256::new();
        for part in [user, password, hash.as_str()] {
            key.update((part.len() as u64).to_le_bytes());
            key.update(part.as_bytes());
        }
        let key: [u8; 32] = key.finalize().into();
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&ok) = verified.get(&key) {
            return ok;
        }
        // Checked with the lock held: concurrent scrapes with the same credentials wait for one
        // bcrypt instead of each running their own.
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if verified.len() >= AUTH_CACHE_MAX {
            verified.clear();
        }
        verified.insert(key, ok);
        ok
    }
}
