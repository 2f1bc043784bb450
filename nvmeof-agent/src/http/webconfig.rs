//! `--web.config.file`: TLS, basic auth and response headers in the file format of Prometheus'
//! exporter-toolkit, so that one file serves node_exporter and this exporter alike:
//!
//! ```yaml
//! tls_server_config:               # see `super::tls` for every key
//!   cert_file: server.crt          # PEM chain; relative paths are relative to this file
//!   key_file: server.key           # PEM key (PKCS#8, PKCS#1 or SEC1)
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: ca.crt
//!   min_version: TLS12
//!   cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
//! http_server_config:
//!   http2: false                   # accepted; HTTP/1.1 is all this server speaks
//!   headers:
//!     X-Frame-Options: deny        # the five headers exporter-toolkit allows, no others
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hash, as `htpasswd -nBC 10` prints it
//! ```
//!
//! Unknown keys are an error (exporter-toolkit reads the file strictly too), and so is a value
//! this subset does not implement, naming it: a setting silently ignored is a security hole.
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

pub use super::tls::Tls;
use super::tls::TlsServerConfig;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    http_server_config: HttpServerConfig,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    /// Accepted for node_exporter's files; this server speaks HTTP/1.1 only (over TLS too: ALPN
    /// offers `http/1.1`), so `true` (Go's default) changes nothing.
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The response headers a web config may set, and the values allowed where the set is closed:
/// exporter-toolkit's list (`web/handler.go`), which refuses any other header, so that a config
/// cannot change `Content-Type`, `Content-Encoding` or the auth challenge.
const CONFIGURABLE_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Checks `http_server_config.headers` as exporter-toolkit does (names exactly as listed) and
/// turns them into headers; a blank value sets nothing ("unset if blank").
fn headers(configured: &BTreeMap<String, String>) -> anyhow::Result<HeaderMap> {
    let mut out = HeaderMap::new();
    for (name, value) in configured {
        let Some((_, allowed)) = CONFIGURABLE_HEADERS.iter().find(|(n, _)| n == name) else {
            bail!(
                "http_server_config.headers: HTTP header {name:?} can not be configured (only {:?})",
                CONFIGURABLE_HEADERS.map(|(n, _)| n)
            );
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            bail!(
                "http_server_config.headers: invalid value for {name}. Expected one of: {allowed:?}, but got: {value:?}"
            );
        }
        if value.is_empty() {
            continue;
        }
        let v = HeaderValue::from_str(value)
            .with_context(|| format!("http_server_config.headers: the value of {name}"))?;
        out.insert(HeaderName::from_bytes(name.as_bytes())?, v);
    }
    Ok(out)
}

impl WebConfig {
    /// Reads and checks the file: certificates and keys load, hashes are bcrypt, headers are
    /// ones a config may set.
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
        let headers = headers(&config.http_server_config.headers)
            .with_context(|| format!("web config {}", path.display()))?;
        if config.http_server_config.http2 == Some(true) {
            log::info!(
                "web config {}: http_server_config.http2 is ignored: this server speaks HTTP/1.1",
                path.display()
            );
        }
        Ok(Loaded { tls, auth, headers })
    }
}

/// A checked web config.
pub struct Loaded {
    pub tls: Option<Tls>,
    pub auth: Option<BasicAuth>,
    /// `http_server_config.headers`: set on every response.
    pub headers: HeaderMap,
}

/// Basic auth against bcrypt hashes. bcrypt is slow on purpose (tens of ms at cost 10), too
/// slow for every scrape: a successful check is remembered by a SHA-256 of user, password and
/// hash (never the password itself), as exporter-toolkit caches its checks.
///
/// bcrypt runs on the blocking pool, never on an async worker, and at most
/// [`bcrypt_slots`] checks run at once: a flood of wrong passwords queues behind those slots
/// while a remembered check, a request without credentials and everything else the workers do
/// go on. The cache has its own lock, never held across a bcrypt. Only successes are
/// remembered, so a flood of wrong passwords cannot push a good check out of the cache. An
/// unknown user costs a bcrypt too (against a configured hash, so at the same cost): timing does
/// not tell which users exist.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Verified against for an unknown user: the first configured hash.
    dummy: String,
    verified: Mutex<HashSet<[u8; 32]>>,
    slots: Arc<Semaphore>,
}

/// Remembered checks at most; the cache starts over beyond (changing hashes by reloads cannot
/// grow it without bound).
const AUTH_CACHE_MAX: usize = 1024;

/// bcrypt checks that may run at once: half the CPUs, at least one, so that a flood of wrong
/// passwords never takes every core from scrapes.
fn bcrypt_slots() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus / 2).max(1)
}

/// Checks that `hash` is a bcrypt hash the check can use: `$2a$`, `$2b$` or `$2y$`, a cost in
/// bcrypt's 4..=31, then 22 characters of salt and 31 of hash in bcrypt's base64. A hash that
/// fails here would refuse every password at request time, silently.
fn check_bcrypt(hash: &str) -> Result<(), String> {
    if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        return Err("is not a bcrypt hash (it must start with $2a$, $2b$ or $2y$)".into());
    }
    if hash.len() != 60 || !hash.is_ascii() || hash.as_bytes()[6] != b'$' {
        return Err(format!(
            "is not a bcrypt hash ({} characters; $2y$CC$ and 53 characters of salt and hash expected)",
            hash.len()
        ));
    }
    let cost: u32 = hash[4..6]
        .parse()
        .map_err(|_| format!("has cost {:?}, not a number", &hash[4..6]))?;
    if !(4..=31).contains(&cost) {
        return Err(format!("has cost {cost}, outside bcrypt's 4..=31"));
    }
    let salt = bcrypt::BASE_64.decode(&hash[7..29]).ok();
    let digest = bcrypt::BASE_64.decode(&hash[29..]).ok();
    if salt.map(|s| s.len()) != Some(16) || digest.map(|d| d.len()) != Some(23) {
        return Err("is not a bcrypt hash (its salt or hash is not bcrypt's base64)".into());
    }
    Ok(())
}

/// User and password from an `Authorization` header value; the scheme is case-insensitive
/// (RFC 7617).
fn credentials(header: Option<&str>) -> Option<(String, String)> {
    let (scheme, encoded) = header?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> anyhow::Result<BasicAuth> {
        for (user, hash) in &users {
            if let Err(why) = check_bcrypt(hash) {
                bail!("basic_auth_users: the hash of {user:?} {why}");
            }
        }
        let dummy = users.values().next().context("no user")?.clone();
        Ok(BasicAuth {
            users,
            dummy,
            verified: Mutex::new(HashSet::new()),
            slots: Arc::new(Semaphore::new(bcrypt_slots())),
        })
    }

    /// How many users the config names.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an `Authorization` header value names a user with the right password.
    pub async fn allows(&self, header: Option<&str>) -> bool {
        let Some((user, password)) = credentials(header) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let mut key = Sha256::new();
        for part in [&user, &password, &hash] {
            key.update((part.len() as u64).to_le_bytes());
            key.update(part.as_bytes());
        }
        let key: [u8; 32] = key.finalize().into();
        if known && self.verified().contains(&key) {
            return true;
        }
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return false;
        };
        // The slot goes with the work: a client that hangs up does not free it before bcrypt
        // is done.
        let check = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            bcrypt::verify(password, &hash).unwrap_or(false)
        });
        let ok = check.await.unwrap_or(false) && known;
        if ok {
            let mut verified = self.verified();
            if verified.len() >= AUTH_CACHE_MAX {
                verified.clear();
            }
            verified.insert(key);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_that_cannot_be_checked_are_refused() {
        let good = bcrypt::hash("pw", 4).unwrap();
        assert_eq!(check_bcrypt(&good), Ok(()));
        let cases = [
            ("plaintext".to_owned(), "must start with $2a$"),
            (format!("$2y$99${}", &good[7..]), "cost 99, outside"),
            (format!("$2y$03${}", &good[7..]), "cost 3, outside"),
            (format!("$2y$x1${}", &good[7..]), "not a number"),
            (good[..59].to_owned(), "59 characters"),
            (format!("{}!{}", &good[..7], &good[8..]), "base64"),
            (format!("$2y$10$$$$${}", &good[11..]), "base64"),
        ];
        for (hash, why) in cases {
            let err = check_bcrypt(&hash).unwrap_err();
            assert!(err.contains(why), "{hash}: {err}");
        }
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for scheme in ["Basic", "basic", "BASIC"] {
            let header = format!("{scheme} dXNlcjpwYXNz");
            assert_eq!(
                credentials(Some(&header)),
                Some(("user".to_owned(), "pass".to_owned()))
            );
        }
        assert_eq!(credentials(Some("Bearer dXNlcjpwYXNz")), None);
        assert_eq!(credentials(Some("Basic")), None);
        assert_eq!(credentials(None), None);
    }
}
