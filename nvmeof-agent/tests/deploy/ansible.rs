//! The Ansible role (deploy/ansible) and the systemd unit it installs, checked by the real tools,
//! offline: ansible-lint's production profile; `ansible-playbook --check --diff` of the example
//! playbook on localhost (nothing written, the service left alone); a real run into a scratch
//! root, whose unit `systemd-analyze verify` must pass without a word (it exits 0 on unknown keys
//! and bad values, printing a warning) and `systemd-analyze security --offline=yes` must score at
//! most 4.0. ansible-core and ansible-lint are in the deploy tools' venv (`cargo xtask
//! bootstrap`); systemd-analyze comes with Debian's systemd. Without them the tests skip, except
//! in CI.
use std::path::{Path, PathBuf};
use std::process::Command;

use nvmeof_agent::cli::parse_from;
use serde_json::json;
use xtask::deploy_tools::{self, require};

use super::chart::{run, which};
use super::ROOT;

/// `systemd-analyze security`'s "Overall exposure level" at most this: "OK" in its own scale.
const MAX_EXPOSURE: f64 = 4.0;

const UNIT: &str = "nvmeof-exporter.service";

fn ansible(name: &str) -> Option<PathBuf> {
    require(
        deploy_tools::tool(name),
        &format!("{name} (the deploy tools' venv)"),
    )
}

fn systemd_analyze() -> Option<PathBuf> {
    require(
        which("systemd-analyze"),
        "systemd-analyze (Debian's systemd)",
    )
}

/// A scratch controller and managed host in one: an inventory putting localhost (connection
/// local, the venv's Python, `become` by su since CI has no sudo) in the example playbook's
/// group, a stand-in binary, and the role's variables pointing every path into `root`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let python = deploy_tools::python().expect("the deploy tools' venv");
        std::fs::write(
            dir.path().join("inventory.ini"),
            format!(
                "[nvmeof_exporter]\nlocalhost ansible_connection=local \
                 ansible_python_interpreter={} ansible_become_method=su\n",
                python.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("nvmeof-exporter"), b"\x7fELF stand-in").unwrap();
        // What every host has; the role creates only its own config dir.
        for d in ["root/usr/local/bin", "root/etc/systemd/system"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Scratch { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn vars(&self, extra: serde_json::Value) -> serde_json::Value {
        let root = self.root();
        let at = |p: &str| root.join(p).to_string_lossy().into_owned();
        let mut vars = json!({
            "nvmeof_exporter_binary": self.dir.path().join("nvmeof-exporter"),
            "nvmeof_exporter_install_path": at("usr/local/bin/nvmeof-exporter"),
            "nvmeof_exporter_config_dir": at("etc/nvmeof-exporter"),
            "nvmeof_exporter_unit_dir": at("etc/systemd/system"),
            "nvmeof_exporter_web_config": {"basic_auth_users": {"prometheus": "$2y$10$stand-in"}},
        });
        for (k, v) in extra.as_object().unwrap() {
            vars[k] = v.clone();
        }
        vars
    }

    /// `ansible-playbook deploy/ansible/site.yml` with `vars` and `args`: success and output.
    fn playbook(&self, playbook: &Path, vars: &serde_json::Value, args: &[&str]) -> (bool, String) {
        let file = self.dir.path().join("vars.json");
        std::fs::write(&file, vars.to_string()).unwrap();
        run(Command::new(playbook)
            .arg("-i")
            .arg(self.dir.path().join("inventory.ini"))
            .arg("-e")
            .arg(format!("@{}", file.display()))
            .args(args)
            .arg(format!("{ROOT}/deploy/ansible/site.yml"))
            // Ansible's own temp and collections home in the scratch dir, not the user's.
            .env("ANSIBLE_HOME", self.dir.path().join("ansible-home"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("PYTHONWARNINGS", "ignore"))
    }
}

/// The numbers of the PLAY RECAP line (`ok=7 changed=4 ... failed=0`).
fn recap(text: &str, key: &str) -> u32 {
    let line = text
        .lines()
        .find(|l| l.starts_with("localhost") && l.contains("failed="))
        .unwrap_or_else(|| panic!("no PLAY RECAP in:\n{text}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// What the task named `task` did (the first result line after its header).
fn outcome<'a>(text: &'a str, task: &str) -> &'a str {
    let at = text
        .find(&format!("TASK [nvmeof_exporter : {task}]"))
        .unwrap_or_else(|| panic!("no task {task:?} in:\n{text}"));
    text[at..]
        .lines()
        .skip(1)
        .find(|l| !l.trim().is_empty() && !l.starts_with('*'))
        .unwrap()
}

#[test]
fn the_role_passes_ansible_lint_production_profile() {
    let Some(lint) = ansible("ansible-lint") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (ok, text) = run(Command::new(lint)
        .args(["--offline", "site.yml", "roles/nvmeof_exporter"])
        .current_dir(format!("{ROOT}/deploy/ansible"))
        .env("ANSIBLE_HOME", home.path())
        .env("NO_COLOR", "1")
        .env("PYTHONWARNINGS", "ignore"));
    assert!(ok, "{text}");
    assert!(text.contains("0 failure(s), 0 warning(s)"), "{text}");
    assert!(
        text.contains("Last profile that met the validation criteria was 'production'"),
        "{text}"
    );
}

/// `--check --diff` on a host without systemd as PID 1 (as CI is): the run succeeds, shows the
/// unit it would write, writes nothing, and neither starts nor restarts the service (the unit
/// it would need was not written). Without the check-mode guard the start task fails here.
#[test]
fn the_example_playbook_in_check_mode_shows_the_unit_and_writes_nothing() {
    let Some(playbook) = ansible("ansible-playbook") else {
        return;
    };
    let s = Scratch::new();
    let (ok, text) = s.playbook(&playbook, &s.vars(json!({})), &["--check", "--diff"]);
    assert!(ok, "{text}");
    assert_eq!(recap(&text, "failed"), 0, "{text}");
    // The binary, the config dir, the web config and the unit.
    assert_eq!(recap(&text, "changed"), 4, "{text}");
    for line in [
        "+LimitNOFILE=65536",
        "+LimitMEMLOCK=infinity",
        "+CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN",
    ] {
        assert!(text.contains(line), "no {line} in the diff:\n{text}");
    }
    assert!(
        outcome(&text, "Start nvmeof-exporter now and at boot").starts_with("skipping"),
        "{text}"
    );
    let written: Vec<_> = walk(&s.root());
    assert!(written.is_empty(), "check mode wrote {written:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `systemd-analyze verify --man=no`: rc 0 is not enough (warnings leave it 0), so any output
/// counts as a failure; the text is returned for the message.
fn verify(analyze: &Path, unit: &Path) -> Result<(), String> {
    let (ok, text) = run(Command::new(analyze).args(["verify", "--man=no"]).arg(unit));
    if ok && text.trim().is_empty() {
        Ok(())
    } else {
        Err(text)
    }
}

/// The overall exposure `systemd-analyze security --offline=yes` gives the unit.
fn exposure(analyze: &Path, unit: &Path) -> f64 {
    let (_, text) = run(Command::new(analyze)
        .args(["security", "--offline=yes"])
        .arg(unit));
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    let after = line.rsplit_once(':').unwrap().1;
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

/// The value of the unit's one `key=` line.
fn directive(unit: &str, key: &str) -> Option<String> {
    let mut found = unit
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='));
    let value = found.next()?.trim().to_owned();
    assert!(found.next().is_none(), "{key} twice");
    Some(value)
}

/// The unit's ExecStart as argv (continuation lines joined).
fn exec_start(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    line.split_whitespace().map(str::to_owned).collect()
}

/// The role run for real (service management off: no systemd here) into a scratch root, with
/// SMART on and off: the files land with their modes, the unit passes flags the exporter
/// parses, `systemd-analyze verify` says nothing and the exposure is at most 4.0. Then the same
/// checks on two broken copies, to show they can fail: a misspelt key, and the hardening gone.
#[test]
fn the_role_installs_a_unit_systemd_verifies_at_low_exposure() {
    let (Some(playbook), Some(analyze)) = (ansible("ansible-playbook"), systemd_analyze()) else {
        return;
    };
    for smart in [true, false] {
        let s = Scratch::new();
        let vars = s.vars(json!({
            "nvmeof_exporter_smart": smart,
            "nvmeof_exporter_manage_service": false,
            "nvmeof_exporter_limit_nofile": 131072,
            "nvmeof_exporter_extra_args": ["--metrics.per-queue", "--smart.interval=5m"],
        }));
        let (ok, text) = s.playbook(&playbook, &vars, &[]);
        assert!(ok, "{text}");
        let mode = |p: &str| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(s.root().join(p))
                .unwrap_or_else(|e| panic!("{p}: {e}"))
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("usr/local/bin/nvmeof-exporter"), 0o755);
        assert_eq!(mode("etc/nvmeof-exporter/web.yml"), 0o600);
        let unit_path = s.root().join("etc/systemd/system").join(UNIT);
        let unit = std::fs::read_to_string(&unit_path).unwrap();

        let argv = exec_start(&unit);
        assert_eq!(
            Path::new(&argv[0]),
            s.root().join("usr/local/bin/nvmeof-exporter")
        );
        let mut parsed = vec!["nvmeof-exporter".to_owned()];
        parsed.extend(argv[1..].iter().cloned());
        parse_from(parsed.clone()).unwrap_or_else(|e| panic!("{parsed:?}: {e}"));
        assert_eq!(argv.iter().any(|a| a == "--no-collector.smart"), !smart);
        assert!(argv.iter().any(|a| a.starts_with("--web.config.file=")));
        let mut caps = vec!["CAP_BPF", "CAP_PERFMON"];
        if smart {
            caps.push("CAP_SYS_ADMIN");
        }
        for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
            assert_eq!(directive(&unit, key), Some(caps.join(" ")), "{unit}");
        }
        assert_eq!(directive(&unit, "LimitNOFILE").as_deref(), Some("131072"));
        assert_eq!(
            directive(&unit, "LimitMEMLOCK").as_deref(),
            Some("infinity")
        );

        verify(&analyze, &unit_path).unwrap_or_else(|e| panic!("verify:\n{e}\n{unit}"));
        let level = exposure(&analyze, &unit_path);
        eprintln!("smart={smart}: exposure {level}");
        assert!(level <= MAX_EXPOSURE, "smart={smart}: exposure {level}");

        if smart {
            let dir = tempfile::tempdir().unwrap();
            let broken = dir.path().join(UNIT);
            std::fs::write(
                &broken,
                unit.replace("ProtectSystem=strict", "ProtectSytem=strict"),
            )
            .unwrap();
            let said = verify(&analyze, &broken).expect_err("a misspelt key passed verify");
            assert!(said.contains("ProtectSytem"), "{said}");
            let bare: String = unit
                .lines()
                .filter(|l| {
                    !l.starts_with("Protect")
                        && !l.starts_with("Restrict")
                        && !l.starts_with("SystemCall")
                        && !l.starts_with("Private")
                        && !l.starts_with("CapabilityBoundingSet")
                })
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&broken, bare).unwrap();
            let bare_level = exposure(&analyze, &broken);
            eprintln!("without the hardening: exposure {bare_level}");
            assert!(bare_level > MAX_EXPOSURE, "{bare_level}");
        }
    }
}

/// Every variable of the role's defaults has an argument spec, and every spec a default (the
/// binary's default is computed from facts, so it has none in the spec): a new variable cannot
/// go unvalidated.
#[test]
fn the_argument_specs_cover_the_role_defaults() {
    let role = "deploy/ansible/roles/nvmeof_exporter";
    let defaults: serde_json::Value =
        serde_saphyr::from_str(&super::read(&format!("{role}/defaults/main.yml"))).unwrap();
    let specs: serde_json::Value =
        serde_saphyr::from_str(&super::read(&format!("{role}/meta/argument_specs.yml"))).unwrap();
    let options = specs["argument_specs"]["main"]["options"]
        .as_object()
        .unwrap();
    let keys = |m: &serde_json::Map<String, serde_json::Value>| {
        m.keys().cloned().collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(keys(defaults.as_object().unwrap()), keys(options));
    for (name, spec) in options {
        assert!(spec["type"].is_string(), "{name}: no type");
        assert!(spec["description"].is_string() || spec["description"].is_array());
        if name != "nvmeof_exporter_binary" {
            assert_eq!(spec["default"], defaults[name], "{name}: default");
        }
    }
}

/// Ansible validates the role's variables against meta/argument_specs.yml before any task: a
/// value of the wrong type stops the run there, naming the variable.
#[test]
fn the_role_refuses_a_variable_of_the_wrong_type() {
    let Some(playbook) = ansible("ansible-playbook") else {
        return;
    };
    let s = Scratch::new();
    let vars = s.vars(json!({"nvmeof_exporter_limit_nofile": "plenty"}));
    let (ok, text) = s.playbook(&playbook, &vars, &["--check"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("Validating arguments against arg spec"),
        "{text}"
    );
    assert!(text.contains("nvmeof_exporter_limit_nofile"), "{text}");
    assert_eq!(recap(&text, "changed"), 0, "{text}");
}
