//! The alerting rules (and, in step with them, the dashboard) come from one source,
//! `xtask/src/monitoring`: the committed files are its rendering, every selector carries the
//! configurable job selector, every rule says what it means and where its runbook section is,
//! and every alert has a promtool case that fires and one that stays quiet.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use xtask::monitoring::{self, alerts, Config};

use super::read;

#[test]
fn the_committed_rules_and_dashboard_are_the_generators_rendering() {
    for (path, text) in monitoring::rendered(&Config::default()) {
        assert!(
            read(path) == text,
            "{path} differs from its source in xtask/src/monitoring: run `cargo xtask render-deploy`"
        );
    }
}

/// Every place a series is selected: `name{matchers}` for the exporter's families and `up`.
fn selectors(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let (name, after) = tail.split_at(end);
        rest = after;
        if name.starts_with("nvmeof_") || name == "up" {
            let matchers = after
                .strip_prefix('{')
                .and_then(|m| m.split_once('}'))
                .map_or("", |(m, _)| m);
            out.push((name.to_owned(), matchers.to_owned()));
        }
    }
    out
}

/// A selector that is not the default one renders into every series selection, so the rules
/// never read another job's series; with the default, promtool's test inputs (which carry
/// `job="nvmeof-exporter"`) exercise the same text.
#[test]
fn every_selector_carries_the_job_selector() {
    let config = Config {
        job_selector: r#"job=~"storage-.*",cluster="c1""#.to_owned(),
        ..Config::default()
    };
    let mut seen = 0;
    for rule in alerts::rules() {
        let expr = alerts::expr(&rule, &config);
        let sel = selectors(&expr);
        assert!(!sel.is_empty(), "{}: no selector in {expr}", rule.alert);
        for (name, matchers) in sel {
            assert!(
                matchers.starts_with(&config.job_selector),
                "{}: {name}{{{matchers}}} lacks the job selector",
                rule.alert
            );
            seen += 1;
        }
        assert!(!expr.contains("%S"), "{expr}");
    }
    assert!(seen >= 35, "{seen} selectors");
    assert_eq!(
        selectors(r#"rate(nvmeof_a_total{x="1"}[5m]) / up"#),
        [
            ("nvmeof_a_total".into(), r#"x="1""#.into()),
            ("up".into(), String::new())
        ]
    );
}

/// The `## Heading` anchors of docs/runbook.md, as `alerts::anchor` spells them.
fn runbook_sections() -> BTreeSet<String> {
    read("docs/runbook.md")
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| alerts::anchor(h.trim()))
        .collect()
}

fn rule_file() -> Vec<Value> {
    let rules: Value = serde_saphyr::from_str(&read(alerts::PATH)).unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn every_rule_has_a_description_and_a_runbook_section() {
    let sections = runbook_sections();
    let mut problems = Vec::new();
    let mut alerts = BTreeSet::new();
    for rule in rule_file() {
        let name = rule["alert"].as_str().unwrap().to_owned();
        let a = &rule["annotations"];
        if a["description"].as_str().is_none_or(|d| d.len() < 30) {
            problems.push(format!("{name}: no description"));
        }
        let url = a["runbook_url"].as_str().unwrap_or("");
        match url.split_once('#') {
            Some(("docs/runbook.md", anchor)) if sections.contains(anchor) => {}
            _ => problems.push(format!("{name}: runbook_url {url:?} names no section")),
        }
        alerts.insert(alerts::anchor(&name));
    }
    // And no section for an alert that does not exist.
    for s in sections.difference(&alerts) {
        problems.push(format!("docs/runbook.md: section {s} for no alert"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(alerts.len() >= 24, "{}", alerts.len());
}

/// The metric names an expression selects.
fn metric_names(expr: &str) -> BTreeSet<String> {
    selectors(expr).into_iter().map(|(n, _)| n).collect()
}

/// For each alert, whether alerts_test.yml has an evaluation where it fires and one where it
/// stays quiet on inputs that include series it reads (an empty input proves nothing).
fn promtool_coverage(tests: &Value, rules: &[Value]) -> BTreeMap<String, (bool, bool)> {
    let exprs: BTreeMap<String, BTreeSet<String>> = rules
        .iter()
        .map(|r| {
            let metrics = metric_names(r["expr"].as_str().unwrap())
                .into_iter()
                .map(|m| m.trim_end_matches("_bucket").to_owned())
                .collect();
            (r["alert"].as_str().unwrap().to_owned(), metrics)
        })
        .collect();
    let mut out: BTreeMap<String, (bool, bool)> =
        exprs.keys().map(|k| (k.clone(), (false, false))).collect();
    for group in tests["tests"].as_array().unwrap() {
        let inputs: BTreeSet<String> = group["input_series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let s = s["series"].as_str().unwrap();
                s[..s.find('{').unwrap_or(s.len())].to_owned()
            })
            .collect();
        for case in group["alert_rule_test"].as_array().into_iter().flatten() {
            let alert = case["alertname"].as_str().unwrap();
            let Some(entry) = out.get_mut(alert) else {
                continue;
            };
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let reads_inputs = exprs[alert]
                .iter()
                .any(|m| inputs.iter().any(|i| i.trim_end_matches("_bucket") == m));
            if fires {
                entry.0 = true;
            } else if reads_inputs {
                entry.1 = true;
            }
        }
    }
    out
}

#[test]
fn every_alert_has_a_promtool_case_that_fires_and_one_that_stays_quiet() {
    let rules = rule_file();
    let tests: Value = serde_saphyr::from_str(&read("deploy/prometheus/alerts_test.yml")).unwrap();
    let coverage = promtool_coverage(&tests, &rules);
    let missing: Vec<String> = coverage
        .iter()
        .filter(|(_, (fires, quiet))| !(fires & quiet))
        .map(|(a, (fires, quiet))| format!("{a}: fires {fires}, quiet {quiet}"))
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    assert_eq!(coverage.len(), rules.len());
    // The check itself: a quiet case on inputs the rule does not read, or no case, counts not.
    let thin: Value = serde_saphyr::from_str(
        "tests:\n  - input_series:\n      - series: 'unrelated{job=\"x\"}'\n        values: '1'\n    \
         alert_rule_test:\n      - alertname: NvmeofPathLost\n        exp_alerts: []\n",
    )
    .unwrap();
    let c = promtool_coverage(&thin, &rules);
    assert_eq!(c["NvmeofPathLost"], (false, false));
    assert_eq!(c["NvmeofExporterDown"], (false, false));
}

/// The chart's PrometheusRule with another job selector and runbook base: both land in every
/// rule, and promtool accepts the result.
#[test]
fn the_charts_rule_takes_its_job_selector_and_runbook_url_from_values() {
    let values = serde_json::json!({"prometheusRule": {
        "enabled": true,
        "jobSelector": "job=\"storage-exporter\",cluster=\"c1\"",
        "runbookUrl": "https://wiki.example.com/nvmeof/runbook",
    }});
    let Some(yaml) = super::chart::render_for_tests(&values) else {
        return;
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let mut n = 0;
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let expr = r["expr"].as_str().unwrap();
            for (name, matchers) in selectors(expr) {
                assert!(
                    matchers.starts_with(r#"job="storage-exporter",cluster="c1""#),
                    "{name}{{{matchers}}}"
                );
            }
            let url = r["annotations"]["runbook_url"].as_str().unwrap();
            assert!(
                url.starts_with("https://wiki.example.com/nvmeof/runbook#nvmeof"),
                "{url}"
            );
            n += 1;
        }
    }
    assert_eq!(n, rule_file().len());
    assert!(!rule["spec"].to_string().contains("nvmeof-exporter\\\""));
    let Some(promtool) = xtask::deploy_tools::require(super::chart::which("promtool"), "promtool")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, rule["spec"].to_string()).unwrap();
    let (ok, out) = super::chart::run(
        std::process::Command::new(promtool)
            .args(["check", "rules"])
            .arg(&spec),
    );
    assert!(ok && out.contains(&format!("{n} rules found")), "{out}");
}

fn dashboard_panels(d: &Value) -> Vec<Value> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .cloned()
        .collect()
}

/// The label lists of every aggregation in an expression (`sum by (a, b) (...)`), and the
/// aggregations without one (`sum(...)`, `max without (...)`), by operator.
fn aggregations(expr: &str) -> Vec<(String, Option<Vec<String>>)> {
    const OPS: [&str; 8] = [
        "sum", "avg", "max", "min", "count", "group", "stddev", "quantile",
    ];
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    for op in OPS {
        let mut from = 0;
        while let Some(at) = expr[from..].find(op) {
            let start = from + at;
            let end = start + op.len();
            from = end;
            let word_start = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let rest = expr[end..].trim_start();
            if !word_start
                || !(rest.starts_with('(') || rest.starts_with("by") || rest.starts_with("without"))
            {
                continue;
            }
            let labels = rest.strip_prefix("by").map(|r| {
                let r = r.trim_start().strip_prefix('(').unwrap();
                r[..r.find(')').unwrap()]
                    .split(',')
                    .map(|l| l.trim().to_owned())
                    .collect()
            });
            out.push((op.to_owned(), labels));
        }
    }
    out
}

#[test]
fn every_dashboard_aggregation_keeps_cluster_job_and_instance() {
    let d = monitoring::dashboard::dashboard(&Config::default());
    let mut n = 0;
    for p in dashboard_panels(&d) {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (op, labels) in aggregations(expr) {
                let labels =
                    labels.unwrap_or_else(|| panic!("{}: {op} without by in {expr}", p["title"]));
                for must in ["cluster", "job", "instance"] {
                    assert!(
                        labels.iter().any(|l| l == must),
                        "{}: {op} by {labels:?} drops {must}",
                        p["title"]
                    );
                }
                n += 1;
            }
        }
    }
    assert!(n >= 40, "{n} aggregations");
    // The check itself.
    assert_eq!(aggregations("sum(rate(x[1m]))"), [("sum".to_owned(), None)]);
    assert_eq!(
        aggregations("max by (instance, le) (x) / summary_total"),
        [(
            "max".to_owned(),
            Some(vec!["instance".to_owned(), "le".to_owned()])
        )]
    );
}

/// Every panel says what it shows, in which unit, with thresholds; a stat shows 0 when healthy
/// through `or on() vector(0)` (a bare `or vector(0)` would add a label-less 0 beside the
/// per-instance values); RDMA and FC port counters, copied per controller, are never summed.
#[test]
fn every_panel_has_a_description_a_unit_thresholds_and_healthy_zeros() {
    let d = monitoring::dashboard::dashboard(&Config::default());
    let panels = dashboard_panels(&d);
    let mut problems = Vec::new();
    let mut stats = 0;
    for p in &panels {
        let title = p["title"].as_str().unwrap();
        if p["description"].as_str().is_none_or(|s| s.len() < 30) {
            problems.push(format!("{title}: no description"));
        }
        let defaults = &p["fieldConfig"]["defaults"];
        if defaults["unit"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{title}: no unit"));
        }
        let steps = defaults["thresholds"]["steps"]
            .as_array()
            .map_or(0, Vec::len);
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            if p["type"] == "stat" && !expr.ends_with(" or on() vector(0)") {
                problems.push(format!(
                    "{title}: a stat without `or on() vector(0)`: {expr}"
                ));
            }
            if (expr.contains("nvmeof_rdma_") || expr.contains("nvmeof_fc_"))
                && expr.contains("sum")
            {
                problems.push(format!("{title}: sums per-port counters: {expr}"));
            }
        }
        if p["type"] == "stat" {
            stats += 1;
            if steps < 2 {
                problems.push(format!("{title}: a stat without a threshold"));
            }
        } else if steps < 1 {
            problems.push(format!("{title}: no thresholds"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(stats >= 8, "{stats} stats");
    let kinds: BTreeSet<&str> = panels.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert!(kinds.contains("heatmap"), "{kinds:?}");
    assert!(
        panels.iter().any(|p| p["type"] == "table"
            && p["targets"][0]["expr"]
                .as_str()
                .unwrap()
                .starts_with("topk(10,")
            && p["targets"][0]["expr"].as_str().unwrap().contains("queue")),
        "a top-k slowest queues table"
    );
}

/// The variables: job and instance always, and a cluster variable over the configured label
/// whose "All" is `.*`, which also matches series without the label (so it is optional).
#[test]
fn the_dashboard_has_cluster_job_and_instance_variables() {
    let config = Config {
        cluster_label: "k8s_cluster".to_owned(),
        ..Config::default()
    };
    let d = monitoring::dashboard::dashboard(&config);
    let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    for name in ["datasource", "cluster", "job", "instance", "subsystem"] {
        assert!(vars.contains_key(name), "{name} missing");
    }
    assert_eq!(
        vars["cluster"]["definition"],
        "label_values(nvmeof_exporter_build_info, k8s_cluster)"
    );
    assert_eq!(vars["cluster"]["allValue"], ".*");
    for p in dashboard_panels(&d) {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            assert!(
                expr.contains("k8s_cluster=~\"$cluster\",job=~\"$job\",instance=~\"$instance\""),
                "{expr}"
            );
        }
    }
}

/// Every panel query parses on the real Prometheus' parser: they go into a rule file (Grafana's
/// `$__rate_interval` and `$__range` as durations, the variables as `.*`) that promtool checks.
#[test]
fn every_dashboard_query_parses() {
    let Some(promtool) = xtask::deploy_tools::require(super::chart::which("promtool"), "promtool")
    else {
        return;
    };
    let d = monitoring::dashboard::dashboard(&Config::default());
    let mut rules = Vec::new();
    for p in dashboard_panels(&d) {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h");
            let expr = ["cluster", "job", "instance", "subsystem"]
                .iter()
                .fold(expr, |e, v| e.replace(&format!("\"${v}\""), "\".*\""));
            rules.push(
                serde_json::json!({"record": format!("panel_{}", rules.len()), "expr": expr}),
            );
        }
    }
    let n = rules.len();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("panels.json");
    std::fs::write(
        &file,
        serde_json::json!({"groups": [{"name": "panels", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let (ok, out) = super::chart::run(
        std::process::Command::new(promtool)
            .args(["check", "rules"])
            .arg(&file),
    );
    assert!(ok && out.contains(&format!("{n} rules found")), "{out}");
}
