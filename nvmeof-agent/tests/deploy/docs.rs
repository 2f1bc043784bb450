//! docs/deploy.md against what it describes: every exporter flag it names parses, and its
//! Prometheus scrape configuration is one promtool accepts, with the rules it loads.
use std::process::Command;

use nvmeof_agent::cli::{command, parse_from};
use nvmeof_agent::collectors::registry;
use xtask::deploy_tools::require;

use super::{read, ROOT};

/// The exporter's flags in a text: `--name.with.dots[=value]` (other tools' flags have no dot in
/// their name), without placeholders such as `--collector.NAME`.
fn exporter_flags(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("--") {
        let rest = &text[at + 2..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if !name.contains('.') || name.ends_with('.') {
            continue;
        }
        let mut flag = format!("--{name}");
        if let Some(value) = rest[name_len..].strip_prefix('=') {
            let len = value
                .find(|c: char| !(c.is_ascii_alphanumeric() || "._:/-".contains(c)))
                .unwrap_or(value.len());
            flag.push('=');
            flag.push_str(&value[..len]);
        }
        out.push(flag);
    }
    out
}

#[test]
fn the_deploy_docs_pass_flags_the_exporter_has() {
    let flags = exporter_flags(&read("docs/deploy.md"));
    assert!(flags.len() >= 8, "{flags:?}");
    let cmd = command(&registry());
    let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
    for flag in &flags {
        if flag.contains('=') {
            parse_from(["nvmeof-exporter", flag.as_str()])
                .unwrap_or_else(|e| panic!("docs/deploy.md passes {flag}: {e}"));
        } else {
            // Named in prose, perhaps without its value.
            let name = flag.trim_start_matches("--");
            assert!(
                longs.contains(&name),
                "docs/deploy.md names {flag}, which the exporter lacks"
            );
        }
    }
    for must in [
        "--metrics.per-queue",
        "--metrics.native-only=true",
        "--no-collector.smart",
    ] {
        assert!(flags.iter().any(|f| f == must), "{must} not in {flags:?}");
    }
}

/// The yaml block after the first `<!-- prometheus.yml` mark of `doc` whose mark starts with
/// `mark`.
fn marked_config<'a>(doc: &'a str, mark: &str) -> &'a str {
    let after = &doc[doc.find(mark).expect("the marked scrape config")..];
    let start = after.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    &after[start..start + after[start..].find("```").unwrap()]
}

/// promtool's `check config` of `config` (with the rules beside it): its output, or `None`
/// without promtool.
fn promtool_check(config: &str) -> Option<String> {
    let promtool = require(
        super::chart::which("promtool"),
        "promtool (Debian's prometheus)",
    )?;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        format!("{ROOT}/deploy/prometheus/alerts.yml"),
        dir.path().join("alerts.yml"),
    )
    .unwrap();
    let (ok, text) = super::chart::run(
        Command::new(promtool)
            .args(["check", "config", "prometheus.yml"])
            .current_dir(dir.path()),
    );
    assert!(ok, "{text}");
    assert!(text.contains("SUCCESS: prometheus.yml is valid"), "{text}");
    Some(text)
}

#[test]
fn the_deploy_docs_scrape_config_passes_promtool_check_config() {
    let doc = read("docs/deploy.md");
    let config = marked_config(&doc, "<!-- prometheus.yml");
    assert!(config.contains("job_name: nvmeof-exporter\n"), "{config}");
    if let Some(text) = promtool_check(config) {
        assert!(text.contains("rules found"), "{text}");
    }
}

/// docs/metrics.md's scrape config for per-queue detail on demand: the parameter on one target
/// of the node's job.
#[test]
fn the_per_queue_on_demand_scrape_config_passes_promtool_check_config() {
    let doc = read("docs/metrics.md");
    let config = marked_config(&doc, "<!-- prometheus.yml (per queue on demand)");
    assert!(config.contains("job_name: nvmeof-exporter\n"), "{config}");
    assert!(config.contains("__param_controller: nvme3"), "{config}");
    promtool_check(config);
}
