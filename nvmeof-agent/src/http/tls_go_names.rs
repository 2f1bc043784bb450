//! Go's names for TLS settings (crypto/tls and exporter-toolkit), mapped to rustls' ring
//! provider: cipher suites, curves, versions and client authentication. TLS 1.3 suites are not
//! configurable in Go: named, they change nothing here either. What Go has and rustls has not
//! (CBC and RSA key exchange suites, P-521, TLS 1.0 and 1.1) is said: left out of a list with a
//! warning, refused when nothing rustls implements is left. A name neither knows is refused,
//! naming it.
use anyhow::bail;
use rustls::crypto::ring::{cipher_suite as suite, kx_group};
use rustls::crypto::SupportedKxGroup;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use super::TlsServerConfig;

/// What a name of Go's maps to.
enum GoName<T> {
    Rustls(T),
    /// Known to Go, not implemented by rustls' ring provider.
    Missing,
    /// A TLS 1.3 suite: always on, in Go as here.
    Tls13,
}

/// A cipher suite by its Go name (crypto/tls `CipherSuites()`; the IANA names).
fn go_cipher_suite(name: &str) -> Option<GoName<SupportedCipherSuite>> {
    use GoName::*;
    Some(match name {
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            Tls13
        }
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            Rustls(suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
        }
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            Rustls(suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
        }
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            Rustls(suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
            Rustls(suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
        }
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
            Rustls(suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            Rustls(suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)
        }
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384" => Missing,
        _ => return None,
    })
}

/// A key exchange group by its Go name (exporter-toolkit's `curve_preferences` names).
fn go_curve(name: &str) -> Option<GoName<&'static dyn SupportedKxGroup>> {
    use GoName::*;
    Some(match name {
        "X25519" => Rustls(kx_group::X25519),
        "CurveP256" => Rustls(kx_group::SECP256R1),
        "CurveP384" => Rustls(kx_group::SECP384R1),
        "CurveP521" => Missing,
        _ => return None,
    })
}

/// How a list of Go names in `tls_server_config` is read: `field` is its key, `lookup` maps a
/// name, `unknown` names the thing and lists the known names, `rustls_has` says what rustls
/// offers instead when it lacks every name given.
pub(super) struct GoNames<T: 'static> {
    field: &'static str,
    lookup: fn(&str) -> Option<GoName<T>>,
    unknown: (&'static str, &'static str),
    rustls_has: &'static str,
}

impl<T> GoNames<T> {
    /// What `names` stand for in rustls, in their order; `None` for rustls' defaults. Names
    /// rustls lacks are left out with a warning, as long as one is left; an unknown name is an
    /// error, as in exporter-toolkit.
    pub(super) fn read(&self, names: &[String]) -> anyhow::Result<Option<Vec<T>>> {
        let field = self.field;
        if names.is_empty() {
            return Ok(None);
        }
        let (mut kept, mut missing) = (Vec::new(), Vec::new());
        for name in names {
            match (self.lookup)(name) {
                Some(GoName::Rustls(s)) => kept.push(s),
                Some(GoName::Missing) => missing.push(name.as_str()),
                Some(GoName::Tls13) => log::info!(
                    "tls_server_config.{field}: {name} is a TLS 1.3 suite; TLS 1.3 suites are \
                     not configurable (as in Go) and stay enabled"
                ),
                None => {
                    let (what, known) = self.unknown;
                    bail!("tls_server_config.{field}: unknown {what} {name:?} ({known})")
                }
            }
        }
        if !missing.is_empty() {
            if kept.is_empty() {
                bail!(
                    "tls_server_config.{field}: none of {missing:?} is implemented by rustls{}",
                    self.rustls_has
                );
            }
            log::warn!(
                "tls_server_config.{field}: {missing:?} left out: not implemented by rustls"
            );
        }
        Ok(Some(kept))
    }
}

/// The TLS 1.2 suites `cipher_suites` names.
pub(super) const CIPHER_SUITES: GoNames<SupportedCipherSuite> = GoNames {
    field: "cipher_suites",
    lookup: go_cipher_suite,
    unknown: (
        "cipher",
        "Go's names from crypto/tls CipherSuites(), e.g. TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    rustls_has: " (it has the ECDHE AES-GCM and ChaCha20-Poly1305 suites only)",
};

/// The key exchange groups `curve_preferences` names.
pub(super) const CURVE_PREFERENCES: GoNames<&'static dyn SupportedKxGroup> = GoNames {
    field: "curve_preferences",
    lookup: go_curve,
    unknown: ("curve", "X25519, CurveP256, CurveP384 or CurveP521"),
    rustls_has: "",
};

fn version(name: &str, field: &str) -> anyhow::Result<u8> {
    match name {
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        "TLS10" | "TLS11" => {
            bail!("tls_server_config.{field} {name:?}: rustls implements TLS12 and TLS13 only")
        }
        _ => bail!("tls_server_config.{field}: unknown TLS version {name:?} (TLS12 or TLS13)"),
    }
}

pub(super) fn versions(
    t: &TlsServerConfig,
) -> anyhow::Result<Vec<&'static SupportedProtocolVersion>> {
    let min = version(t.min_version.as_deref().unwrap_or("TLS12"), "min_version")?;
    let max = version(t.max_version.as_deref().unwrap_or("TLS13"), "max_version")?;
    if min > max {
        bail!("tls_server_config: min_version TLS{min} is above max_version TLS{max}");
    }
    let mut v = Vec::new();
    if max >= 13 {
        v.push(&rustls::version::TLS13);
    }
    if min <= 12 {
        v.push(&rustls::version::TLS12);
    }
    Ok(v)
}

/// Go's `ClientAuthType`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClientAuth {
    NoClientCert,
    /// Asked for, neither required nor verified.
    RequestClientCert,
    /// Required, not verified against a CA (the client still proves it holds the key).
    RequireAnyClientCert,
    /// Verified against the client CA when the client sends one.
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    pub(super) fn parse(name: Option<&str>) -> anyhow::Result<ClientAuth> {
        Ok(match name.unwrap_or("") {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // exporter-toolkit keeps the old name too.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            other => bail!(
                "tls_server_config.client_auth_type: invalid {other:?} (NoClientCert, \
                 RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or \
                 RequireAndVerifyClientCert)"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_names_map_to_rustls_or_say_why_not() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let kept = CIPHER_SUITES
            .read(&names(&[
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            ]))
            .unwrap()
            .unwrap();
        let kept: Vec<_> = kept.iter().map(|s| s.suite()).collect();
        assert_eq!(
            kept,
            [
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            ]
        );
        assert_eq!(CIPHER_SUITES.read(&[]).unwrap().map(|v| v.len()), None);
        let e = CIPHER_SUITES
            .read(&names(&["TLS_RSA_WITH_RC4_128_SHA"]))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown cipher \"TLS_RSA_WITH_RC4_128_SHA\""),
            "{e}"
        );
        let e = CIPHER_SUITES
            .read(&names(&["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"]))
            .unwrap_err();
        assert!(e.to_string().contains("is implemented by rustls"), "{e}");

        assert_eq!(
            CURVE_PREFERENCES
                .read(&names(&["CurveP384", "CurveP521"]))
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        assert!(CURVE_PREFERENCES.read(&names(&["CurveP521"])).is_err());
        assert!(CURVE_PREFERENCES
            .read(&names(&["P-256"]))
            .unwrap_err()
            .to_string()
            .contains("unknown curve"));
    }

    #[test]
    fn versions_and_client_auth_names() {
        let t = |min: Option<&str>, max: Option<&str>| TlsServerConfig {
            cert_file: "c".into(),
            key_file: "k".into(),
            client_auth_type: None,
            client_ca_file: None,
            min_version: min.map(Into::into),
            max_version: max.map(Into::into),
            cipher_suites: vec![],
            prefer_server_cipher_suites: None,
            curve_preferences: vec![],
        };
        assert_eq!(versions(&t(None, None)).unwrap().len(), 2);
        assert_eq!(
            versions(&t(None, Some("TLS12"))).unwrap(),
            [&rustls::version::TLS12]
        );
        assert_eq!(
            versions(&t(Some("TLS13"), None)).unwrap(),
            [&rustls::version::TLS13]
        );
        assert!(versions(&t(Some("TLS13"), Some("TLS12")))
            .unwrap_err()
            .to_string()
            .contains("above"));
        assert!(versions(&t(Some("TLS11"), None))
            .unwrap_err()
            .to_string()
            .contains("TLS12 and TLS13 only"));
        assert_eq!(
            ClientAuth::parse(Some("RequireClientCert")).unwrap(),
            ClientAuth::RequireAnyClientCert
        );
        assert!(ClientAuth::parse(Some("Whatever")).is_err());
    }
}
