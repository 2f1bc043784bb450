//! What ships beside the binary, checked against the binary: every metric the alert rules and the
//! Grafana dashboard query is one the exporter declares (a renamed family breaks this test, not a
//! pager at night), every flag the DaemonSet, the Ansible unit and the docs pass parses, and the
//! DaemonSet asks for exactly the capabilities the exporter uses. The Helm chart's own checks are
//! in `chart.rs`, the Ansible role's and its systemd unit's in `ansible.rs`.
use std::collections::{BTreeMap, BTreeSet};

use nvmeof_agent::cli::{command, parse_from};
use nvmeof_agent::collectors::registry;
use xtask::deploy_tools::require;

mod ansible;
mod chart;
mod docs;
mod image;
mod monitoring;
mod smart_device;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Family name → type, from the registry.
fn families() -> BTreeMap<&'static str, &'static str> {
    registry()
        .iter()
        .flat_map(|r| r.families.iter().map(|f| (f.name, f.kind.as_str())))
        .collect()
}

/// A Grafana query as Prometheus receives it: the dashboard's variables replaced by values of
/// their kind (an interval where one stands in a range or as `$__range`, a name elsewhere), and a
/// variable's `label_values(selector, label)` reduced to its selector.
fn as_promql(query: &str) -> String {
    let mut q = query.to_owned();
    for interval in ["$__rate_interval", "$__interval", "$__range"] {
        q = q.replace(interval, "5m");
    }
    let mut out = String::with_capacity(q.len());
    let mut rest = q.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let len = match after.strip_prefix('{') {
            Some(braced) => braced.find('}').map_or(after.len(), |n| n + 2),
            None => after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len()),
        };
        out.push('x');
        rest = &after[len..];
    }
    out.push_str(rest);
    match out
        .strip_prefix("label_values(")
        .and_then(|args| args.rsplit_once(','))
    {
        Some((selector, _label)) => selector.to_owned(),
        None => out,
    }
}

/// Collects every metric name a query selects: a selector's name, or its `__name__` matcher.
struct Names(Vec<String>);

impl promql_parser::util::ExprVisitor for Names {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &promql_parser::parser::Expr) -> Result<bool, Self::Error> {
        use promql_parser::parser::Expr;
        let vs = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        self.0.extend(vs.name.clone());
        self.0.extend(
            vs.matchers
                .matchers
                .iter()
                .filter(|m| m.name == "__name__")
                .map(|m| m.value.clone()),
        );
        Ok(true)
    }
}

/// The `nvmeof_*` names a PromQL expression selects that are not declared families (a
/// histogram's or summary's `_bucket`, `_sum` and `_count` series resolve to their family), or
/// the parser's error: the expression is parsed as Prometheus would (by promql-parser, which
/// follows Prometheus' grammar), so a query that would not run fails here too.
fn unknown_metrics(expr: &str, known: &BTreeMap<&str, &str>) -> Vec<String> {
    let parsed = match promql_parser::parser::parse(expr) {
        Ok(e) => e,
        Err(e) => return vec![format!("(no PromQL: {e})")],
    };
    let mut names = Names(Vec::new());
    let Ok(_) = promql_parser::util::walk_expr(&mut names, &parsed);
    names
        .0
        .into_iter()
        .filter(|name| name.starts_with("nvmeof_"))
        .filter(|name| {
            let resolves = known.contains_key(name.as_str())
                || ["_bucket", "_sum", "_count"].iter().any(|s| {
                    name.strip_suffix(s)
                        .and_then(|base| known.get(base))
                        .is_some_and(|k| *k == "histogram" || *k == "summary")
                });
            !resolves
        })
        .collect()
}

#[test]
fn the_name_check_catches_typos_and_allows_histogram_series() {
    let known: BTreeMap<&str, &str> = [
        ("nvmeof_a_total", "counter"),
        ("nvmeof_h_seconds", "histogram"),
        ("nvmeof_g", "gauge"),
    ]
    .into();
    assert!(unknown_metrics(
        "rate(nvmeof_a_total[5m]) + nvmeof_h_seconds_bucket + nvmeof_h_seconds_count",
        &known
    )
    .is_empty());
    assert_eq!(
        unknown_metrics("nvmeof_a_totl > 0 and nvmeof_g_count", &known),
        ["nvmeof_a_totl", "nvmeof_g_count"]
    );
    // A label value is no metric; a name given by `__name__` is.
    assert!(unknown_metrics(r#"up{job="nvmeof_y"}"#, &known).is_empty());
    assert_eq!(
        unknown_metrics(r#"{__name__="nvmeof_b"}"#, &known),
        ["nvmeof_b"]
    );
    // A query Prometheus would refuse is named as such.
    assert_eq!(unknown_metrics("rate(nvmeof_a_total)[", &known).len(), 1);
    assert!(unknown_metrics("rate(nvmeof_a_total)[", &known)[0].starts_with("(no PromQL"));
}

#[test]
fn grafana_queries_read_as_prometheus_receives_them() {
    assert_eq!(
        as_promql(r#"rate(nvmeof_a_total{instance=~"$instance",job=~"${job}"}[$__rate_interval])"#),
        r#"rate(nvmeof_a_total{instance=~"x",job=~"x"}[5m])"#
    );
    assert_eq!(
        as_promql(r#"label_values(nvmeof_g{cluster=~"$cluster"}, instance)"#),
        r#"nvmeof_g{cluster=~"x"}"#
    );
}

#[test]
fn alert_rules_query_declared_metrics_and_say_what_and_how_bad() {
    let known = families();
    let rules: serde_json::Value =
        serde_saphyr::from_str(&read("deploy/prometheus/alerts.yml")).unwrap();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .expect("every rule is an alert")
                .to_owned();
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: expr"));
            for m in unknown_metrics(expr, &known) {
                problems.push(format!("{name}: {m} is no family of the exporter"));
            }
            let severity = rule["labels"]["severity"].as_str();
            if !matches!(severity, Some("critical" | "warning")) {
                problems.push(format!("{name}: severity {severity:?}"));
            }
            if rule["annotations"]["summary"].as_str().is_none() {
                problems.push(format!("{name}: no summary"));
            }
            if !seen.insert(name.clone()) {
                problems.push(format!("{name} twice"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The questions the rules answer: connected, reconnecting, failing, slow, media, exporter.
    for must in [
        "NvmeofControllerNotLive",
        "NvmeofReconnecting",
        "NvmeofCommandTimeouts",
        "NvmeofHighReadLatency",
        "NvmeofSmartCriticalWarning",
        "NvmeofExporterEbpfDown",
    ] {
        assert!(seen.contains(must), "{must} missing");
    }
}

/// The rules' promtool unit tests (`deploy/prometheus/alerts_test.yml`) pass: an alert that must
/// fire does, with its labels and text, and resolves. promtool comes with Debian's prometheus,
/// which `cargo xtask bootstrap` installs; without it the test says so and checks nothing, except
/// in CI, where it fails.
#[test]
fn alert_rules_pass_their_promtool_tests() {
    let Some(promtool) = require(chart::which("promtool"), "promtool (Debian's prometheus)") else {
        return;
    };
    let (ok, text) = chart::run(
        std::process::Command::new(promtool)
            .args(["test", "rules", "alerts_test.yml"])
            .current_dir(format!("{ROOT}/deploy/prometheus")),
    );
    assert!(ok, "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Every `"expr"` (and templating query) string anywhere in a JSON document.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_queries_declared_metrics() {
    let known = families();
    let dash: serde_json::Value =
        serde_json::from_str(&read("dashboards/nvmeof-exporter.json")).unwrap();
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    assert!(all.len() >= 30, "{} queries", all.len());
    let problems: Vec<String> = all
        .iter()
        .flat_map(|e| {
            unknown_metrics(&as_promql(e), &known)
                .into_iter()
                .map(move |m| format!("{m} in {e}"))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Panel ids are unique (Grafana keys its state by them).
    let ids: Vec<u64> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), ids.iter().collect::<BTreeSet<_>>().len());
}

/// The plain manifests (the chart's default rendering) pass flags that parse, and the chart's
/// capabilities-only securityContext asks for exactly the capabilities the exporter uses; with
/// SMART on (the default) the container is privileged, for the host's NVMe devices (the
/// chart's values.yaml says why). Every other value set is checked in `chart.rs`.
#[test]
fn the_daemonset_passes_flags_that_parse_and_asks_for_the_capabilities_it_uses() {
    let text = read("deploy/kubernetes/nvmeof-exporter.yaml");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(
        spec["hostNetwork"], true,
        "NVMe/TCP sockets are in the host's netns"
    );
    let c = &spec["containers"][0];
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let mut argv = vec!["nvmeof-exporter".to_owned()];
    argv.extend(args);
    parse_from(argv.clone()).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], true, "SMART opens the host's /dev/nvme*");
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    let values: serde_json::Value =
        serde_saphyr::from_str(&read("deploy/helm/nvmeof-exporter/values.yaml")).unwrap();
    let unprivileged = &values["securityContext"];
    let caps = |k: &str| -> BTreeSet<String> {
        unprivileged["capabilities"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(caps("drop"), BTreeSet::from(["ALL".to_owned()]));
    assert_eq!(
        caps("add"),
        ["BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(unprivileged["privileged"], false);
    assert_eq!(unprivileged["readOnlyRootFilesystem"], true);
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(mounts.contains(&"/sys/kernel/tracing"), "{mounts:?}");
    assert!(argv.iter().any(|a| a == "--path.dev=/host/dev") && mounts.contains(&"/host/dev"));
}

#[test]
fn the_ansible_role_and_the_image_use_flags_and_paths_that_exist() {
    let cmd = command(&registry());
    let longs: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let unit = read("deploy/ansible/roles/nvmeof_exporter/templates/nvmeof-exporter.service.j2");
    let mut flags = 0;
    for token in unit.split_whitespace().filter(|t| t.starts_with("--")) {
        let name = token.trim_start_matches("--").split('=').next().unwrap();
        assert!(
            longs.contains(name),
            "the unit passes --{name}, which the exporter lacks"
        );
        flags += 1;
    }
    assert!(flags >= 4, "{flags}");
    for path in [
        "deploy/ansible/roles/nvmeof_exporter/defaults/main.yml",
        "deploy/ansible/roles/nvmeof_exporter/tasks/main.yml",
        "deploy/ansible/roles/nvmeof_exporter/handlers/main.yml",
    ] {
        let _: serde_json::Value =
            serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    // The image and the role take the binary where `cargo xtask build` leaves it; the role's
    // default for the host's architecture (x86_64 or aarch64, Rust's and Ansible's names agree).
    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains("\nARG RUST_TARGET=x86_64-unknown-linux-musl\n"));
    assert!(dockerfile.contains("\nCOPY target/${RUST_TARGET}/release/nvmeof-exporter "));
    assert!(
        read("deploy/ansible/roles/nvmeof_exporter/defaults/main.yml").contains(
            "{{ role_path }}/../../../../target/{{ ansible_facts['architecture'] }}\
         -unknown-linux-musl/release/nvmeof-exporter"
        )
    );
}
