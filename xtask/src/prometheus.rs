//! A real Prometheus server (Debian's package, which `cargo xtask bootstrap` installs) scraping a
//! target on host loopback (the lab's agent through its forwarded port, or the agent's HTTP app
//! in its own tests): the independent reader of what the agent exposes. It runs with native
//! histograms on, so it asks for the protobuf exposition first and ingests the native buckets;
//! queries go through its HTTP API.
//!
//! Everything stays on 127.0.0.1; the server, its TSDB and its configuration live in a temporary
//! directory and go when the handle is dropped. Every wait is bounded.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::monitoring::dashboard::Vars;

/// The binary Debian's `prometheus` package installs.
pub const BINARY: &str = "/usr/bin/prometheus";

/// Whether [`BINARY`] is installed. The agent's own tests run without it where it is not (a
/// developer's machine), and say that they were skipped rather than pass quietly.
pub fn installed_or_say_skipped() -> bool {
    let installed = Path::new(BINARY).is_file();
    if !installed {
        eprintln!("skipped: no {BINARY} (Debian package `prometheus`)");
    }
    installed
}

pub struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sample of an instant-query answer (a native histogram's: its count).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub value: f64,
}

/// What Prometheus answered to one query of a dashboard panel ([`Prometheus::answer_panels`]).
#[derive(Clone, Debug)]
pub struct PanelAnswer<'a> {
    pub title: &'a str,
    /// A stat panel, which must show one value.
    pub stat: bool,
    /// The query as sent.
    pub expr: String,
    pub samples: Vec<Sample>,
}

/// An alert of `/api/v1/alerts`: its name, `pending` or `firing`, its labels and value.
#[derive(Clone, Debug)]
pub struct Alert {
    pub name: String,
    pub state: String,
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub value: String,
}

impl Alert {
    pub fn label(&self, k: &str) -> &str {
        self.labels
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    }
}

/// Percent-encodes a query parameter (RFC 3986 unreserved characters pass).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Prometheus {
    /// Starts a server that scrapes `127.0.0.1:target_port` every second with native histograms
    /// on, and waits (at most 30 s) until it answers.
    pub fn start(target_port: u16) -> Result<Prometheus> {
        Self::start_scraping("nvmeof", &[target_port])
    }

    /// Starts a server whose job `job` scrapes each of `target_ports` on 127.0.0.1 every
    /// second (one `instance` each), as [`Prometheus::start`] does one.
    pub fn start_scraping(job: &str, target_ports: &[u16]) -> Result<Prometheus> {
        Self::start_with_rules(job, target_ports, 1, None)
    }

    /// As [`Prometheus::start_scraping`], every `scrape_interval_s` seconds (the scrape timeout
    /// as long), with a rule file's text loaded (`rule_files`) and evaluated every second.
    pub fn start_with_rules(
        job: &str,
        target_ports: &[u16],
        scrape_interval_s: u32,
        rules: Option<&str>,
    ) -> Result<Prometheus> {
        if !Path::new(BINARY).is_file() {
            bail!("{BINARY} is missing: `cargo xtask bootstrap` installs Debian's prometheus");
        }
        let dir = tempfile::tempdir()?;
        let port = crate::lab::free_port()?;
        let targets: Vec<String> = target_ports
            .iter()
            .map(|p| format!("'127.0.0.1:{p}'"))
            .collect();
        let mut config = format!(
            "global:\n  scrape_interval: {scrape_interval_s}s\n  scrape_timeout: {scrape_interval_s}s\n  \
             evaluation_interval: 1s\nscrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: \
             [{}]\n",
            targets.join(", ")
        );
        if let Some(rules) = rules {
            let path = dir.path().join("rules.yml");
            std::fs::write(&path, rules)?;
            config += &format!("rule_files:\n  - {}\n", path.display());
        }
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(BINARY)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=native-histograms")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {BINARY}"))?;
        let p = Prometheus { child, port, dir };
        p.wait_for("the server to be ready", Duration::from_secs(30), |p| {
            Ok(matches!(
                crate::lab::http_get(p.port, "/-/ready"),
                Ok((200, _, _))
            ))
        })?;
        Ok(p)
    }

    /// The server's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Polls `ready` every 200 ms until it says yes, at most `limit`.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut ready: impl FnMut(&Self) -> Result<bool>,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            if ready(self)? {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!(
                    "waited {limit:?} for {what}; prometheus log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An instant query's vector result; a native histogram's sample has its count as value.
    pub fn query(&self, expr: &str) -> Result<Vec<Sample>> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let (status, body, _) = crate::lab::http_get(self.port, &path)?;
        let v: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("{expr}: answer {body}"))?;
        if status != 200 || v["status"] != "success" {
            bail!("{expr}: HTTP {status}: {body}");
        }
        let result = v["data"]["result"]
            .as_array()
            .with_context(|| format!("{expr}: no vector in {body}"))?;
        result
            .iter()
            .map(|s| {
                // A native histogram sample (`histogram`, no `value`) stands for its count.
                let value = s["value"][1]
                    .as_str()
                    .or_else(|| s["histogram"][1]["count"].as_str())
                    .and_then(|t| t.parse::<f64>().ok())
                    .with_context(|| format!("{expr}: sample without a value: {s}"))?;
                let labels = s["metric"].as_object().cloned().unwrap_or_default();
                Ok(Sample { labels, value })
            })
            .collect()
    }

    /// Every query of the dashboard `board`'s panels (rows have none) as Grafana sends it with
    /// `vars`, and Prometheus' answer. A query it refuses goes to `problems`, under its panel's
    /// title: a panel that cannot answer is a finding, not the end of the test.
    pub fn answer_panels<'a>(
        &self,
        board: &'a serde_json::Value,
        vars: &Vars,
        problems: &mut Vec<String>,
    ) -> Vec<PanelAnswer<'a>> {
        let mut out = Vec::new();
        for panel in board["panels"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for t in panel["targets"].as_array().into_iter().flatten() {
                let expr = vars.apply(t["expr"].as_str().unwrap_or_default());
                match self.query(&expr) {
                    Ok(samples) => out.push(PanelAnswer {
                        title,
                        stat: panel["type"] == "stat",
                        expr,
                        samples,
                    }),
                    Err(e) => problems.push(format!("{title}: {e:#}")),
                }
            }
        }
        out
    }

    /// GET a path of the HTTP API that answers `{"status": "success", "data": ...}`: the data.
    fn api(&self, path: &str) -> Result<serde_json::Value> {
        let (status, body, _) = crate::lab::http_get(self.port, path)?;
        let mut v: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("{path}: answer {body}"))?;
        if status != 200 || v["status"] != "success" {
            bail!("{path}: HTTP {status}: {body}");
        }
        Ok(v["data"].take())
    }

    /// The alerts pending or firing now (`/api/v1/alerts`).
    pub fn alerts(&self) -> Result<Vec<Alert>> {
        let data = self.api("/api/v1/alerts")?;
        let alerts = data["alerts"]
            .as_array()
            .with_context(|| format!("no alerts in {data}"))?;
        Ok(alerts
            .iter()
            .map(|a| {
                let labels = a["labels"].as_object().cloned().unwrap_or_default();
                Alert {
                    name: labels
                        .get("alertname")
                        .and_then(|n| n.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    state: a["state"].as_str().unwrap_or_default().to_owned(),
                    labels,
                    value: a["value"].as_str().unwrap_or_default().to_owned(),
                }
            })
            .collect())
    }

    /// Every loaded rule (`/api/v1/rules`): (name, health, last error).
    pub fn rules(&self) -> Result<Vec<(String, String, String)>> {
        let data = self.api("/api/v1/rules")?;
        let mut out = Vec::new();
        for g in data["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                out.push((s("name"), s("health"), s("lastError")));
            }
        }
        Ok(out)
    }

    /// The values a label takes in the series `selector` picks (`/api/v1/label/NAME/values`,
    /// what Grafana's `label_values(selector, NAME)` asks).
    pub fn label_values(&self, selector: &str, label: &str) -> Result<Vec<String>> {
        let data = self.api(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            encode(selector)
        ))?;
        Ok(data
            .as_array()
            .with_context(|| format!("{label} of {selector}: {data}"))?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    /// The single value of a query that must answer with exactly one sample.
    pub fn value(&self, expr: &str) -> Result<f64> {
        match self.query(expr)?.as_slice() {
            [one] => Ok(one.value),
            other => bail!("{expr}: {} samples, wanted one: {other:?}", other.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode("histogram_count(x{a=\"b c\"})"),
            "histogram_count%28x%7Ba%3D%22b%20c%22%7D%29"
        );
    }
}
