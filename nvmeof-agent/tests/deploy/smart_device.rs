//! SMART as shipped: can a container with the chart's securityContext open a host character
//! device, as the SMART collector opens /dev/nvmeN? The container runtime's device cgroup
//! decides, whatever the capabilities. Each rendered securityContext is turned into podman's
//! flags key by key (an unknown key fails the test, so the translation stays exact), and
//! busybox's `dd count=0` (an open, no read) runs in it against device nodes this test makes:
//! as the stand-in for an NVMe controller, the numbers of a misc device of the host whose open
//! checks nothing else (/dev/hwrng, /dev/loop-control or /dev/fuse), which no runtime allows by
//! default; as the control, those of /dev/full (1:7), which runtimes allow. podman runs with
//! runc and the ulimits this sandbox permits; its state lives in a temporary directory and no
//! image is pulled (the root file system is a directory).
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use xtask::deploy_tools::{self, require};

use super::chart::which;

/// podman's flags for a Kubernetes container securityContext, or a panic on a key this does
/// not translate.
fn podman_flags(sc: &Value) -> Vec<String> {
    let mut flags = Vec::new();
    for (key, value) in sc.as_object().expect("a securityContext") {
        match (key.as_str(), value) {
            ("privileged", Value::Bool(true)) => flags.push("--privileged".to_owned()),
            ("privileged", Value::Bool(false)) => {}
            ("runAsUser", Value::Number(n)) => flags.push(format!("--user={n}")),
            // Checked by the kubelet before start (uid 0 here): nothing for the runtime.
            ("runAsNonRoot", Value::Bool(false)) => {}
            ("readOnlyRootFilesystem", Value::Bool(true)) => flags.push("--read-only".to_owned()),
            ("allowPrivilegeEscalation", Value::Bool(false)) => {
                flags.push("--security-opt=no-new-privileges".to_owned())
            }
            ("seccompProfile", p) if p["type"] == "RuntimeDefault" => {}
            ("capabilities", caps) => {
                for c in caps["drop"].as_array().into_iter().flatten() {
                    flags.push(format!("--cap-drop={}", c.as_str().unwrap().to_lowercase()));
                }
                for c in caps["add"].as_array().into_iter().flatten() {
                    flags.push(format!("--cap-add=CAP_{}", c.as_str().unwrap()));
                }
            }
            _ => panic!("securityContext {key}: {value} has no podman translation here"),
        }
    }
    flags
}

fn mknod(path: &Path, major: u32, minor: u32) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mknod has no other preconditions.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o400,
            libc::makedev(major, minor),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

struct Sandbox {
    dir: tempfile::TempDir,
    podman: PathBuf,
    /// The stand-in's device cgroup rule.
    device: String,
}

impl Sandbox {
    /// Runs `dd if=<mount>/<device> count=0` in a container with the rendered container's
    /// securityContext and its /dev mount (the device directory of this test in place of the
    /// host's /dev), and `extra` flags: the exit status and the output.
    fn open_device(&self, container: &Value, device: &str, extra: &[&str]) -> (bool, String) {
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "dev")
            .expect("the /dev mount");
        let ro = if mount["readOnly"] == true { ":ro" } else { "" };
        let d = self.dir.path();
        let out = Command::new(&self.podman)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("store"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args([
                "--cgroup-manager=cgroupfs",
                "run",
                "--rm",
                "--network=none",
                "--rootfs",
            ])
            .args(podman_flags(&container["securityContext"]))
            .args(extra)
            .arg(format!(
                "--volume={}:{}{ro}",
                d.join("dev").display(),
                mount["mountPath"].as_str().unwrap()
            ))
            .arg(d.join("rootfs"))
            .args(["/bin/busybox", "dd", "of=/dev/null", "count=0"])
            .arg(format!(
                "if={}/{device}",
                mount["mountPath"].as_str().unwrap()
            ))
            .output()
            .expect("podman runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

fn sandbox() -> Option<Sandbox> {
    let podman = require(which("podman"), "podman")?;
    require(which("runc"), "runc")?;
    let busybox = require(
        Some(PathBuf::from("/bin/busybox")).filter(|p| p.is_file()),
        "busybox (busybox-static)",
    )?;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("rootfs/bin")).unwrap();
    std::fs::copy(busybox, d.join("rootfs/bin/busybox")).unwrap();
    std::fs::create_dir(d.join("dev")).unwrap();
    // The ulimits podman would set by default are above this sandbox's hard limits, and crun
    // 1.8 refuses hybrid cgroups: runc, and limits within reach.
    std::fs::write(
        d.join("containers.conf"),
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         [engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    let host = ["/dev/hwrng", "/dev/loop-control", "/dev/fuse"]
        .into_iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .find(|m| m.file_type().is_char_device());
    let host = require(
        host,
        "a host misc device (/dev/hwrng, /dev/loop-control, /dev/fuse)",
    )?;
    let (major, minor) = (libc::major(host.rdev()), libc::minor(host.rdev()));
    for (name, major, minor) in [("nvme0", major, minor), ("full", 1, 7)] {
        if let Err(e) = mknod(&d.join("dev").join(name), major, minor) {
            require(
                None::<()>,
                &format!("mknod permission (root) for dev/{name}: {e};"),
            )?;
        }
    }
    Some(Sandbox {
        dir,
        podman,
        device: format!("c {major}:{minor} r"),
    })
}

fn container(values: &Value) -> Value {
    let yaml = deploy_tools::render(values).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    let ds = docs.into_iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    ds["spec"]["template"]["spec"]["containers"][0].clone()
}

#[test]
fn smart_needs_the_privileged_container_the_chart_renders() {
    let Some(sandbox) = sandbox() else { return };
    if require(
        deploy_tools::python(),
        "helm-python-sdk (the deploy tools' venv)",
    )
    .is_none()
    {
        return;
    }
    let shipped = container(&json!({}));
    assert_eq!(shipped["securityContext"]["privileged"], true);
    let (ok, out) = sandbox.open_device(&shipped, "nvme0", &[]);
    assert!(ok, "the shipped container cannot open the device:\n{out}");

    // The securityContext the chart renders with SMART off (capabilities only), with the /dev
    // mount SMART would have: the device cgroup refuses the open, but not that of a device
    // runtimes allow, so neither the mount nor the node is what fails.
    let mut capped = shipped.clone();
    capped["securityContext"] =
        container(&json!({"smart": {"enabled": false}}))["securityContext"].clone();
    assert_eq!(capped["securityContext"]["privileged"], false);
    let (ok, out) = sandbox.open_device(&capped, "nvme0", &[]);
    assert!(
        !ok && out.contains("Operation not permitted"),
        "capabilities alone opened a host device:\n{out}"
    );
    let (ok, out) = sandbox.open_device(&capped, "full", &[]);
    assert!(ok, "the control device did not open:\n{out}");
    // And the device cgroup is the cause: a rule for the device (which the Pod API cannot
    // express) lets the same capped container open it.
    let rule = format!("--device-cgroup-rule={}", sandbox.device);
    let (ok, out) = sandbox.open_device(&capped, "nvme0", &[&rule]);
    assert!(ok, "a device cgroup rule did not open the device:\n{out}");
}
