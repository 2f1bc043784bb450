//! The deployment artifacts' checkers, which Debian does not ship, in one pinned venv under the
//! cache (`~/.cache/nvmeof-exporter/deploy-tools/venv-HASH`, one per package list):
//! helm-python-sdk (Helm's Go SDK as a shared library: lint and render without a helm binary,
//! offline), kubernetes-validate
//! (Kubernetes' own OpenAPI schemas 1.25 .. 1.37 inside the wheel, `--strict` refuses unknown
//! keys), check-jsonschema and cloudcoil's prometheus-operator models (the ServiceMonitor,
//! PodMonitor and PrometheusRule schemas, which kubernetes-validate skips), ansible-core and
//! ansible-lint (the role's lint and check-mode run). Also the chart's
//! rendering, shared by `cargo xtask render-deploy` and the deploy tests.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cache;
use crate::cmd::{self, say};

/// Pinned: a new release of any of them is a change to review, not a surprise in CI.
/// cloudcoil-models-prometheus-operator 0.80.1.0 is the newest for Python 3.11.
pub const PIP_PACKAGES: &[&str] = &[
    "helm-python-sdk==0.2.2",
    "kubernetes-validate==1.37.0",
    "check-jsonschema==0.39.0",
    "cloudcoil-models-prometheus-operator==0.80.1.0",
    // The Ansible role's lint (production profile) and its `--check --diff` run. ansible-core
    // 2.20 and later need Python 3.12.
    "ansible-core==2.19.14",
    "ansible-lint==26.10.1",
    // Not a checker: the aarch64 cross build (`arm64`). zig is the C compiler and libc headers
    // for ring's and mimalloc's C parts, and cargo-zigbuild drives it.
    "ziglang==0.17.1",
    "cargo-zigbuild==0.24.1",
];

/// The modules the venv's Python must find for the tools to count as installed (found, not
/// imported: cloudcoil's models take seconds to import, and tests ask often).
const MODULES: &str = "['helm_python', 'kubernetes_validate', 'check_jsonschema', \
     'cloudcoil.models.prometheus_operator', 'ansible', 'ansiblelint', 'ziglang']";

/// The chart, the release and namespace of the plain rendering, and where that rendering lives.
pub const CHART: &str = "deploy/helm/nvmeof-exporter";
pub const RELEASE: &str = "nvmeof-exporter";
pub const RENDERED: &str = "deploy/kubernetes/nvmeof-exporter.yaml";

/// The venv of this package list: named by a hash of the list, so that checkouts pinning
/// different tools (two branches, two worktrees) each keep their own instead of clearing and
/// reinstalling one shared venv in turn.
pub fn venv() -> Result<PathBuf> {
    // FNV-1a: stable across Rust releases, unlike std's hasher.
    let hash = requirements()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    Ok(cache::dir("deploy-tools")?.join(format!("venv-{:08x}", hash >> 32)))
}

fn stamp(venv: &Path) -> PathBuf {
    venv.join("nvmeof-exporter-requirements.txt")
}

fn requirements() -> String {
    PIP_PACKAGES.join("\n") + "\n"
}

/// The venv's Python when the pinned tools are installed.
pub fn python() -> Option<PathBuf> {
    let venv = venv().ok()?;
    let python = venv.join("bin/python");
    if std::fs::read_to_string(stamp(&venv)).ok()? != requirements() {
        return None;
    }
    let check = format!(
        "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in {MODULES}))"
    );
    let ok = Command::new(&python)
        .args(["-c", &check])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// A console script of the venv (`kubernetes-validate`, `check-jsonschema`).
pub fn tool(name: &str) -> Option<PathBuf> {
    let python = python()?;
    let bin = python.parent()?.join(name);
    bin.is_file().then_some(bin)
}

/// Installs the pinned tools into the venv unless they are there already (a second run costs one
/// Python start).
pub fn install() -> Result<()> {
    if python().is_some() {
        say(format!(
            "bootstrap: deploy tools already installed ({})",
            PIP_PACKAGES.join(" ")
        ));
        return Ok(());
    }
    let venv = venv()?;
    // Debian's Python (with python3-venv, a bootstrap package) rather than whatever python3
    // comes first on PATH: the venv then lasts as long as the system does.
    let base = if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    say(format!(
        "bootstrap: installing the deploy tools into {} ({})",
        venv.display(),
        PIP_PACKAGES.join(" ")
    ));
    cmd::run(
        Command::new(base)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )
    .with_context(|| {
        format!(
            "creating the venv {} (is python3-venv installed?)",
            venv.display()
        )
    })?;
    cmd::run(
        Command::new(venv.join("bin/pip"))
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .args(["install", "--quiet"])
            .args(PIP_PACKAGES),
    )
    .context("pip install of the deploy tools (is PyPI reachable?)")?;
    std::fs::write(stamp(&venv), requirements())?;
    if python().is_none() {
        bail!(
            "the deploy tools were installed in {} but Python does not find them ({MODULES})",
            venv.display()
        );
    }
    say("bootstrap: deploy tools installed");
    Ok(())
}

fn helper(python: &Path, args: &[&str]) -> Result<String> {
    let script = cache::workspace().join("xtask/deploy/chart.py");
    cmd::output(Command::new(python).arg(script).args(args))
}

fn need_python() -> Result<PathBuf> {
    python().context("the deploy tools are not installed: run `cargo xtask bootstrap`")
}

/// The chart rendered with `values` (release and namespace `nvmeof-exporter`), every manifest
/// after a `---` and a `# Source:` line, in Helm's install order.
pub fn render(values: &serde_json::Value) -> Result<String> {
    let chart = cache::workspace().join(CHART);
    helper(
        &need_python()?,
        &[
            "render",
            &chart.to_string_lossy(),
            RELEASE,
            RELEASE,
            &values.to_string(),
        ],
    )
    .context("rendering the chart")
}

/// `helm lint --strict` of the chart with `values`: its report (`messages`, `errors`).
pub fn lint(values: &serde_json::Value) -> Result<serde_json::Value> {
    let chart = cache::workspace().join(CHART);
    let out = helper(
        &need_python()?,
        &["lint", &chart.to_string_lossy(), &values.to_string()],
    )?;
    serde_json::from_str(&out).with_context(|| format!("the lint report: {out}"))
}

/// `dir/KIND.schema.json`, the JSON schema of each monitoring.coreos.com/v1 kind, closed to
/// unknown keys (one Python start: the models take seconds to import).
pub fn schemas(dir: &Path, kinds: &[&str]) -> Result<()> {
    let mut args = vec!["schemas", dir.to_str().context("a UTF-8 directory")?];
    args.extend(kinds);
    helper(&need_python()?, &args).map(drop)
}

/// The values of the plain manifests: the defaults, and the Namespace, which kubectl (unlike
/// Helm) can create from the same file as the rest.
pub fn plain_values() -> serde_json::Value {
    serde_json::json!({"namespace": {"create": true}})
}

/// The committed plain manifests: the chart's rendering with [`plain_values`] under a header
/// that says so.
pub fn plain_manifests() -> Result<String> {
    let body = render(&plain_values())?;
    Ok(format!(
        "# nvmeof-exporter for `kubectl apply -f`: the Helm chart {CHART} rendered with its\n\
         # default values and namespace.create=true (release and namespace {RELEASE}) by\n\
         # `cargo xtask render-deploy`. Generated: change the chart and render again (a test\n\
         # compares the two).\n{body}"
    ))
}

/// Whether this runs in CI (`.ci/run` sets CI=true), where a missing tool is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// For tests: `found`, or, when the tool is missing, a panic in CI and a skip (with the reason
/// on stderr) elsewhere. A check must not pass in CI by not running.
pub fn require<T>(found: Option<T>, what: &str) -> Option<T> {
    if found.is_some() {
        return found;
    }
    let msg = format!("{what} is not installed; `cargo xtask bootstrap` installs it");
    if in_ci() {
        panic!("CI: {msg}");
    }
    eprintln!("skipped: {msg}");
    None
}
