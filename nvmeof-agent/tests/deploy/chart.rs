//! The Helm chart (deploy/helm/nvmeof-exporter) and its plain rendering (deploy/kubernetes/),
//! checked by the tools a cluster would use, offline: Helm's own lint and renderer
//! (helm-python-sdk), Kubernetes' OpenAPI schemas of several releases (kubernetes-validate
//! --strict), prometheus-operator's schemas for the ServiceMonitor, PodMonitor and PrometheusRule
//! (check-jsonschema), and promtool for the rule's PromQL. The tools live in the venv that
//! `cargo xtask bootstrap` installs; without it these tests skip with the reason, except in CI
//! (CI=true), where they fail.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use xtask::deploy_tools::{self, require};

use super::{read, ROOT};

/// Kubernetes releases the renderings are validated against: the oldest still seen in storage
/// clusters to the newest schemas the wheel carries.
const KUBE_VERSIONS: &[&str] = &["1.28.0", "1.31.0", "1.34.0", "1.37.0"];

/// Value sets beside the defaults: everything the chart can switch on, and the opposite corner.
fn value_sets() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", json!({})),
        ("plain", deploy_tools::plain_values()),
        (
            "monitored",
            json!({
                "namespace": {"create": true},
                "image": {"digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
                "webConfig": {"secretName": "nvmeof-exporter-web"},
                "extraArgs": ["--metrics.per-queue=true", "--metrics.native-only=true"],
                "serviceMonitor": {
                    "enabled": true,
                    "additionalLabels": {"release": "kube-prometheus-stack"},
                    "scheme": "https",
                    "tlsConfig": {"insecureSkipVerify": true},
                    "basicAuth": {
                        "username": {"name": "nvmeof-exporter-scrape", "key": "username"},
                        "password": {"name": "nvmeof-exporter-scrape", "key": "password"}
                    }
                },
                "podMonitor": {"enabled": true, "scheme": "https", "tlsConfig": {"insecureSkipVerify": true}},
                "prometheusRule": {"enabled": true, "additionalLabels": {"release": "kube-prometheus-stack"}},
                "dashboards": {"annotations": {"grafana_folder": "Storage"}},
                "podSecurityContext": {"fsGroup": 0},
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "node-role.example.com/storage", "operator": "Exists"}]}]}}},
            }),
        ),
        (
            "unprivileged",
            json!({
                "smart": {"enabled": false},
                "hostSysfs": {"enabled": true},
                "service": {"clusterIP": ""},
                "dashboards": {"enabled": false},
                "serviceAccount": {"create": false},
                "scrapeAnnotations": false,
                "priorityClassName": "",
            }),
        ),
    ]
}

fn render(values: &Value) -> Option<String> {
    require(
        deploy_tools::python(),
        "helm-python-sdk (the deploy tools' venv)",
    )?;
    Some(deploy_tools::render(values).unwrap_or_else(|e| panic!("{values}: {e:#}")))
}

pub(crate) fn render_for_tests(values: &Value) -> Option<String> {
    render(values)
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind)
}

/// Runs `cmd` to its end: whether it succeeded, and its stdout and stderr together.
pub(crate) fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn container(docs: &[Value]) -> &Value {
    &kind(docs, "DaemonSet").expect("a DaemonSet")["spec"]["template"]["spec"]["containers"][0]
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn mounts(c: &Value) -> BTreeSet<String> {
    c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_chart_lints_clean_with_every_value_set() {
    if require(
        deploy_tools::python(),
        "helm-python-sdk (the deploy tools' venv)",
    )
    .is_none()
    {
        return;
    }
    for (name, values) in value_sets() {
        let report = deploy_tools::lint(&values).unwrap();
        assert_eq!(report["errors"], json!([]), "{name}: {report}");
        // Severity 2 is a warning, 3 an error; 1 (info) is only "icon is recommended".
        let bad: Vec<&Value> = report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_u64().unwrap_or(3) >= 2)
            .collect();
        assert!(bad.is_empty(), "{name}: {bad:?}");
        assert_eq!(report["total_charts_linted"], 1, "{name}: {report}");
    }
}

/// deploy/kubernetes/ is the chart's default rendering, byte for byte: change the chart, then
/// `cargo xtask render-deploy`.
#[test]
fn the_plain_manifests_are_the_charts_default_rendering() {
    if require(
        deploy_tools::python(),
        "helm-python-sdk (the deploy tools' venv)",
    )
    .is_none()
    {
        return;
    }
    let fresh = deploy_tools::plain_manifests().unwrap();
    let committed = read(deploy_tools::RENDERED);
    assert!(
        fresh == committed,
        "{} differs from the chart's default rendering: run `cargo xtask render-deploy`",
        deploy_tools::RENDERED
    );
}

#[test]
fn every_rendering_passes_kubernetes_validate_strict_from_1_28_to_1_37() {
    let Some(validate) = require(
        deploy_tools::tool("kubernetes-validate"),
        "kubernetes-validate",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, values) in value_sets() {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, render(&values).unwrap()).unwrap();
        files.push(path);
    }
    for version in KUBE_VERSIONS {
        let (ok, out) = run(Command::new(&validate)
            .args(["--strict", "-k", version])
            .args(&files));
        assert!(ok, "kubernetes {version}:\n{out}");
        // Every built-in kind of every rendering was checked, not skipped.
        for resource in [
            "namespace",
            "serviceaccount",
            "configmap",
            "service",
            "daemonset",
        ] {
            assert!(
                out.contains(&format!("passed for resource {resource}/")),
                "{version}: no {resource} validated:\n{out}"
            );
        }
        assert_eq!(
            out.matches("passed for resource daemonset/").count(),
            files.len(),
            "{out}"
        );
    }
    // The check bites: a misspelt key in the DaemonSet fails under --strict.
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(&bad, text.replacen("hostNetwork:", "hostNetwrok:", 1)).unwrap();
    let (ok, out) = run(Command::new(&validate)
        .args(["--strict", "-k", "1.37.0"])
        .arg(&bad));
    assert!(!ok && out.contains("hostNetwrok"), "{out}");
}

/// Each custom resource as its own JSON file, beside its kind's schema.
fn check_custom_resource(checker: &Path, dir: &Path, doc: &Value) -> (bool, String) {
    let kind = doc["kind"].as_str().unwrap();
    let schema = dir.join(format!("{kind}.schema.json"));
    let file = dir.join(format!("{kind}.json"));
    std::fs::write(&file, doc.to_string()).unwrap();
    run(Command::new(checker)
        .arg("--schemafile")
        .arg(&schema)
        .arg(&file))
}

#[test]
fn the_monitors_and_the_rule_match_prometheus_operators_schemas() {
    let Some(checker) = require(deploy_tools::tool("check-jsonschema"), "check-jsonschema") else {
        return;
    };
    let (_, values) = value_sets()
        .into_iter()
        .find(|(name, _)| *name == "monitored")
        .unwrap();
    let docs = docs(&render(&values).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let kinds = ["ServiceMonitor", "PodMonitor", "PrometheusRule"];
    deploy_tools::schemas(dir.path(), &kinds).unwrap();
    for k in kinds {
        let doc = kind(&docs, k).unwrap_or_else(|| panic!("no {k} rendered"));
        assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1");
        let (ok, out) = check_custom_resource(&checker, dir.path(), doc);
        assert!(ok && out.contains("ok -- validation done"), "{k}:\n{out}");
    }
    // The checks bite: a duration Prometheus cannot read, a port number where the name goes,
    // and a misspelt key in a rule each fail.
    let mut sm = kind(&docs, "ServiceMonitor").unwrap().clone();
    sm["spec"]["endpoints"][0]["interval"] = json!("30 seconds");
    assert!(!check_custom_resource(&checker, dir.path(), &sm).0);
    let mut pm = kind(&docs, "PodMonitor").unwrap().clone();
    pm["spec"]["podMetricsEndpoints"][0]["port"] = json!(9856);
    assert!(!check_custom_resource(&checker, dir.path(), &pm).0);
    let mut rule = kind(&docs, "PrometheusRule").unwrap().clone();
    rule["spec"]["groups"][0]["rules"][0]["fro"] = json!("1m");
    let (ok, out) = check_custom_resource(&checker, dir.path(), &rule);
    assert!(!ok && out.contains("'fro' was unexpected"), "{out}");
}

/// The PrometheusRule carries deploy/prometheus/alerts.yml's groups unchanged, and its spec is
/// a rule file promtool accepts.
#[test]
fn the_prometheus_rule_is_alerts_yml_and_passes_promtool() {
    let Some(docs) = render(&json!({"prometheusRule": {"enabled": true}})).map(|y| docs(&y)) else {
        return;
    };
    let rule = kind(&docs, "PrometheusRule").expect("a PrometheusRule");
    let alerts: Value = serde_saphyr::from_str(&read("deploy/prometheus/alerts.yml")).unwrap();
    assert_eq!(rule["spec"], alerts);
    assert!(rule["spec"]["groups"].as_array().unwrap().len() >= 5);
    let Some(promtool) = require(which("promtool"), "promtool (Debian's prometheus)") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, rule["spec"].to_string()).unwrap();
    let (ok, out) = run(Command::new(promtool).args(["check", "rules"]).arg(&spec));
    assert!(ok && out.contains("SUCCESS"), "{out}");
    let rules = alerts["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum::<usize>();
    assert!(out.contains(&format!("{rules} rules found")), "{out}");
}

pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[test]
fn the_dashboards_configmap_carries_every_dashboard_for_grafanas_sidecar() {
    let docs = docs(&read(deploy_tools::RENDERED));
    let cm = kind(&docs, "ConfigMap").expect("the dashboards ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let data = cm["data"].as_object().unwrap();
    let mut names = BTreeSet::new();
    for e in std::fs::read_dir(format!("{ROOT}/dashboards")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let shipped = data[&name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(shipped, read(&format!("dashboards/{name}")).trim_end());
        names.insert(name);
    }
    assert!(!names.is_empty());
    assert_eq!(data.keys().cloned().collect::<BTreeSet<_>>(), names);
}

/// One source: the chart's rules and dashboards are symbolic links to deploy/prometheus/ and
/// dashboards/ (Helm's loader follows them, and `helm package` stores their content).
#[test]
fn the_charts_rules_and_dashboards_link_to_the_one_source() {
    let chart = format!("{ROOT}/{}", deploy_tools::CHART);
    for (link, target) in [
        ("files/alerts.yml", "deploy/prometheus/alerts.yml"),
        ("files/dashboards", "dashboards"),
    ] {
        let link = Path::new(&chart).join(link);
        assert!(
            link.symlink_metadata().unwrap().file_type().is_symlink(),
            "{} is no link",
            link.display()
        );
        assert_eq!(
            link.canonicalize().unwrap(),
            Path::new(ROOT).join(target).canonicalize().unwrap()
        );
    }
}

#[test]
fn the_chart_ships_the_exporters_version() {
    let chart: Value =
        serde_saphyr::from_str(&read("deploy/helm/nvmeof-exporter/Chart.yaml")).unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    let docs = docs(&read(deploy_tools::RENDERED));
    let image = container(&docs)["image"].as_str().unwrap();
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "{image}"
    );
}

/// What each value set renders for the pod: flags that parse, the privileges SMART needs or
/// none beyond the capabilities, probes that work with the web config, no API token.
#[test]
fn every_value_set_renders_a_pod_that_can_do_its_job() {
    for (name, values) in value_sets() {
        let Some(yaml) = render(&values) else { return };
        let docs = docs(&yaml);
        let pod = &kind(&docs, "DaemonSet").unwrap()["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        assert_eq!(pod["hostNetwork"], true, "{name}");
        let c = container(&docs);
        let args = args(c);
        let mut argv = vec!["nvmeof-exporter".to_owned()];
        argv.extend(args.iter().cloned());
        nvmeof_agent::cli::parse_from(argv.clone())
            .unwrap_or_else(|e| panic!("{name}: {argv:?}: {e}"));
        let mounts = mounts(c);
        assert!(mounts.contains("/sys/kernel/tracing"), "{name}: {mounts:?}");
        let sc = &c["securityContext"];
        let smart = values["smart"]["enabled"] != false;
        if smart {
            // The device cgroup opens host devices to privileged containers only.
            assert_eq!(sc["privileged"], true, "{name}");
            assert!(sc.get("allowPrivilegeEscalation").is_none(), "{name}: {sc}");
            assert!(args.contains(&"--path.dev=/host/dev".to_owned()), "{name}");
            assert!(mounts.contains("/host/dev"), "{name}");
        } else {
            assert_eq!(sc["privileged"], false, "{name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
            assert_eq!(
                sc["capabilities"]["add"],
                json!(["BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE"]),
                "{name}"
            );
            assert!(args.contains(&"--no-collector.smart".to_owned()), "{name}");
            assert!(!mounts.contains("/host/dev"), "{name}");
        }
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        if values["hostSysfs"]["enabled"] == true {
            assert!(
                args.contains(&"--path.sysfs=/host/sys".to_owned()) && mounts.contains("/host/sys")
            );
        }
        // With a web config every path asks for credentials (or a client certificate): the
        // kubelet's probes connect instead of asking /healthz.
        for probe in ["livenessProbe", "readinessProbe"] {
            let p = &c[probe];
            if values["webConfig"]["secretName"].is_string() {
                assert_eq!(p["tcpSocket"]["port"], "metrics", "{name}: {p}");
                assert!(p.get("httpGet").is_none(), "{name}: {p}");
            } else {
                assert_eq!(p["httpGet"]["path"], "/healthz", "{name}: {p}");
            }
        }
        if let Some(secret) = values["webConfig"]["secretName"].as_str() {
            assert!(args.contains(&"--web.config.file=/etc/nvmeof-exporter/web.yml".to_owned()));
            assert!(mounts.contains("/etc/nvmeof-exporter"));
            let volumes = pod["volumes"].as_array().unwrap();
            assert!(volumes.iter().any(|v| v["secret"]["secretName"] == secret));
        }
        if let Some(sa) = kind(&docs, "ServiceAccount") {
            assert_eq!(sa["automountServiceAccountToken"], false, "{name}");
        }
        match kind(&docs, "Namespace") {
            Some(ns) => assert_eq!(
                ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged",
                "{name}"
            ),
            None => assert_ne!(values["namespace"]["create"], true, "{name}"),
        }
    }
}
