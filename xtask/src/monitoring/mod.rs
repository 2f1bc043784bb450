//! The alerting rules and the Grafana dashboard, generated from one source in the manner of
//! node-mixin: a [`Config`] of selectors, and Rust tables of rules (`alerts.rs`) and panels
//! (`dashboard.rs`) that use them. `cargo xtask render-deploy` writes
//! `deploy/prometheus/alerts.yml` and `dashboards/nvmeof-exporter.json` with the default config;
//! the deploy tests fail when the committed files differ from what this module renders.
//!
//! Why Rust in xtask rather than jsonnet or Python: the deploy tests already link this crate,
//! so "committed equals generated" is a function call with no interpreter to install, and the
//! tables are type-checked.
pub mod alerts;
pub mod dashboard;

/// The knobs node-mixin calls `nodeExporterSelector` and `clusterLabel`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Label matchers that pick the exporter's series, put into every selector of the rules
    /// (`job="nvmeof-exporter"`: the job name of `docs/deploy.md`'s scrape config and of the
    /// chart's ServiceMonitor and PodMonitor, whose `jobLabel` is the chart name).
    pub job_selector: String,
    /// Where `runbook_url` points; the rule's anchor is appended after `#`.
    pub runbook_url: String,
    /// The label that names a cluster, for the dashboard's optional cluster variable.
    pub cluster_label: String,
}

/// The job selector the plain rule file uses; the chart replaces this exact text with its
/// `prometheusRule.jobSelector` value.
pub const DEFAULT_JOB_SELECTOR: &str = r#"job="nvmeof-exporter""#;
/// Relative to the repository; the chart replaces it with `prometheusRule.runbookUrl`.
pub const DEFAULT_RUNBOOK_URL: &str = "docs/runbook.md";

impl Default for Config {
    fn default() -> Self {
        Config {
            job_selector: DEFAULT_JOB_SELECTOR.to_owned(),
            runbook_url: DEFAULT_RUNBOOK_URL.to_owned(),
            cluster_label: "cluster".to_owned(),
        }
    }
}

/// The files this module renders, relative to the workspace, with their text.
pub fn rendered(config: &Config) -> Vec<(&'static str, String)> {
    vec![
        (alerts::PATH, alerts::render(config)),
        (dashboard::PATH, dashboard::render(config)),
    ]
}

/// A string as a YAML (and JSON) double-quoted scalar.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}
