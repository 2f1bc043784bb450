//! Flag values with a syntax of their own: listen addresses and durations.
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// `--web.listen-address`: `:PORT` (every address), `HOST:PORT` or `[IPv6]:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddress {
    /// `None` listens on every address.
    pub host: Option<String>,
    pub port: u16,
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| format!("{s:?}: expected [IPv6]:PORT"))?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|e| format!("{s:?}: {v6:?} is not an IPv6 address: {e}"))?;
            (Some(v6.to_owned()), port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: expected :PORT, HOST:PORT or [IPv6]:PORT"))?;
            if host.contains(':') {
                return Err(format!(
                    "{s:?}: write an IPv6 address in brackets, [addr]:PORT"
                ));
            }
            ((!host.is_empty()).then(|| host.to_owned()), port)
        };
        let port = port
            .parse::<u16>()
            .map_err(|e| format!("{s:?}: port {port:?} is not a number from 0 to 65535: {e}"))?;
        Ok(ListenAddress { host, port })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            None => write!(f, ":{}", self.port),
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
        }
    }
}

/// A duration as Prometheus writes them: `50ms`, `1s`, `1m30s`, `2h`, `1d` (humantime's
/// grammar, which also takes spaces and long unit names). Zero is refused: every duration here
/// is a deadline or a period.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let total = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 50ms, 1s, 1m"))?;
    if total.is_zero() {
        return Err(format!("{s:?}: must be longer than zero"));
    }
    Ok(total)
}

/// [`parse_duration`] for a threshold that zero turns off (`0`, `0s`).
pub fn parse_threshold(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "0" => Ok(Duration::ZERO),
        t => humantime::parse_duration(t)
            .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 0s (off), 10ms, 1s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_take_zero_for_off() {
        assert_eq!(parse_threshold("0"), Ok(Duration::ZERO));
        assert_eq!(parse_threshold("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_threshold("10ms"), Ok(Duration::from_millis(10)));
        assert!(parse_threshold("-1s").is_err());
        assert!(parse_threshold("fast").is_err());
    }

    #[test]
    fn listen_addresses() {
        let p = |s: &str| s.parse::<ListenAddress>();
        assert_eq!(
            p(":9100").unwrap(),
            ListenAddress {
                host: None,
                port: 9100
            }
        );
        let h = p("127.0.0.1:80").unwrap();
        assert_eq!((h.host.as_deref(), h.port), (Some("127.0.0.1"), 80));
        let v6 = p("[::1]:9856").unwrap();
        assert_eq!(
            (v6.host.as_deref(), v6.to_string()),
            (Some("::1"), "[::1]:9856".into())
        );
        assert!(p("::1:9856").unwrap_err().contains("brackets"));
        assert!(p("9856").is_err());
        assert!(p(":99999").unwrap_err().contains("65535"));
        assert!(p("[zz]:1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert!(parse_duration("10").is_err());
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert!(
            parse_duration("5x").unwrap_err().contains("unit"),
            "{:?}",
            parse_duration("5x")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5é").is_err());
        assert!(parse_duration("1s5").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }
}
