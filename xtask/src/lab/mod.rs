//! The lab VM: a real Debian kernel under QEMU (TCG), whose nvmet target serves NVMe-oF to its
//! own host side. The host drives it through a control channel on the VM's second serial port:
//! [`Lab::sh`] runs a script in the guest (with the functions of `guest/lab.sh` defined) and
//! returns its output and exit code. The agent's port is forwarded to host loopback.
//!
//! The guest has no way out: its only NIC is QEMU's user network in `restrict=on` mode, which
//! carries the forwarded port and nothing else.
mod control;
mod http;
mod qemu;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::say;
use crate::kernel::{self, Kernel, Series};
use crate::{cache, initramfs, trixie};
pub use control::base64_decode;
use control::{first_line, read_lossy, Control};
pub use http::http_get;
use qemu::{tail, wait_for_console, Qemu};

/// Flags of the agent in the lab (tests and `cargo xtask run`): under TCG a collector often
/// needs more than the default 50 ms deadline, and would serve its previous output (or none yet).
pub const LAB_AGENT_ARGS: &str = "--collector.timeout=1s";

/// The agent's port inside the guest (see `guest/lab.sh`).
pub const GUEST_AGENT_PORT: u16 = 9856;
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Clone, Debug)]
pub struct LabOptions {
    pub series: Series,
    /// The agent binary to put in the VM.
    pub agent: Option<PathBuf>,
    /// Host loopback port for the agent; `None` picks a free one.
    pub host_port: Option<u16>,
    /// More guest ports to forward to host loopback (each to a free port, see
    /// [`Lab::host_port_of`]): a second agent in the guest.
    pub more_ports: Vec<u16>,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Extra QEMU arguments (for example an emulated NVMe PCIe controller).
    pub qemu_args: Vec<String>,
    /// Extra files for the initramfs: (host path, guest path).
    pub extra_files: Vec<(PathBuf, PathBuf)>,
    /// Extra host programs for the initramfs, at /usr/bin with their shared libraries (the
    /// benchmark's bpftrace: about 200 MB with its LLVM, so only where it is used).
    pub extra_tools: Vec<&'static str>,
    /// QEMU's own NVMe controller on the PCI bus, beside the fabrics ones: a second
    /// implementation with a real SMART log (temperature, the critical warning it is told).
    pub pcie_nvme: Option<PcieNvme>,
    /// More words for the guest kernel's command line (the benchmark's clock source).
    pub kernel_args: Vec<String>,
}

/// An emulated NVMe PCIe controller (`-device nvme`) backed by a small raw image in the lab's
/// work directory. The guest's `nvme` driver binds it at boot: transport `pcie`, subsystem
/// `nqn.2019-08.org.qemu:<serial>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcieNvme {
    pub serial: String,
    /// SMART Critical Warning byte the controller reports (QEMU's `smart_critical_warning`;
    /// it accepts bits 0 to 4).
    pub critical_warning: u8,
    pub size_mb: u64,
}

impl PcieNvme {
    /// The standard lab's: available spare and reliability degraded (bits 0 and 2) raised, so
    /// that a bit-by-bit decoding shows on a real page.
    pub fn standard() -> Self {
        PcieNvme {
            serial: "nvmeof-lab-pcie".into(),
            critical_warning: 0x05,
            size_mb: 64,
        }
    }

    /// The subsystem NQN QEMU gives the controller.
    pub fn subsysnqn(&self) -> String {
        format!("nqn.2019-08.org.qemu:{}", self.serial)
    }

    /// QEMU arguments for it, its image at `image`.
    fn qemu_args(&self, image: &Path) -> Vec<String> {
        vec![
            "-drive".into(),
            format!(
                "file={},if=none,id=labnvm,format=raw,cache=unsafe",
                image.display()
            ),
            "-device".into(),
            format!(
                "nvme,serial={},drive=labnvm,smart_critical_warning={}",
                self.serial, self.critical_warning
            ),
        ]
    }
}

impl LabOptions {
    pub fn new(series: Series) -> Self {
        LabOptions {
            series,
            agent: None,
            host_port: None,
            more_ports: Vec::new(),
            memory_mb: 1536,
            cpus: 2,
            qemu_args: Vec::new(),
            extra_files: Vec::new(),
            extra_tools: Vec::new(),
            pcie_nvme: None,
            kernel_args: Vec::new(),
        }
    }

    /// The standard lab: every fabric, plus the emulated PCIe controller.
    pub fn standard(series: Series) -> Self {
        LabOptions {
            pcie_nvme: Some(PcieNvme::standard()),
            ..Self::new(series)
        }
    }
}

/// What a guest command printed (stdout and stderr together) and its exit code.
#[derive(Clone, Debug)]
pub struct GuestOutput {
    pub rc: i32,
    pub out: String,
}

pub struct Lab {
    qemu: Qemu,
    control: Control,
    work: PathBuf,
    console: PathBuf,
    pub kernel: Kernel,
    pub host_port: u16,
    /// [`LabOptions::more_ports`]: (guest port, host loopback port).
    more_ports: Vec<(u16, u16)>,
    /// The emulated PCIe controller, when the lab has one.
    pub pcie_nvme: Option<PcieNvme>,
}

/// A free port on host loopback (bound, read, released).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

fn unique_workdir() -> Result<PathBuf> {
    let base = cache::dir("labs")?;
    // Clear what earlier runs left when their process is gone.
    if let Ok(rd) = std::fs::read_dir(&base) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: Option<i32> = name.split('-').next().and_then(|p| p.parse().ok());
            if let Some(pid) = pid {
                // SAFETY: kill with signal 0 only checks whether the process exists.
                if unsafe { libc::kill(pid, 0) } != 0 {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    for n in 0.. {
        let d = base.join(format!("{}-{n}", std::process::id()));
        if std::fs::create_dir(&d).is_ok() {
            return Ok(d);
        }
    }
    unreachable!()
}

/// Whether KVM can be used: only when asked for, since a nested host may expose /dev/kvm that
/// hangs a stock kernel.
pub fn accel() -> &'static str {
    match std::env::var("NVMEOF_LAB_ACCEL").as_deref() {
        Ok("kvm") => "kvm",
        _ => "tcg,thread=multi",
    }
}

/// The guest kernel's command line: the lab's, the options' `kernel_args`, then
/// `NVMEOF_LAB_KERNEL_ARGS` (for experiments).
fn kernel_cmdline(opts: &LabOptions) -> String {
    // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can time
    // out and panic the boot ("IO-APIC + timer doesn't work"), seen on 6.1.
    let mut line = "console=ttyS0 quiet panic=-1 nvme_core.multipath=Y no_timer_check".to_owned();
    for arg in &opts.kernel_args {
        line.push(' ');
        line.push_str(arg);
    }
    if let Ok(more) = std::env::var("NVMEOF_LAB_KERNEL_ARGS") {
        line.push(' ');
        line.push_str(more.trim());
    }
    line
}

/// The kernel's own words for a guest that stopped. Under TCG on a busy host one vCPU's timer
/// can stop and the other spin waiting on it (6.1, once: `rcu_preempt self-detected stall`,
/// `kthread timer wakeup didn't happen ... cpu=1`, then `soft lockup - CPU#0 stuck for 485s`).
const STOP_SIGNS: [&str; 4] = [
    "soft lockup - CPU#",
    "hard LOCKUP",
    "detected stall",
    "Kernel panic - not syncing",
];

/// The first line of a console text that says the kernel stopped, trimmed.
pub fn stop_in(console: &str) -> Option<&str> {
    console
        .lines()
        .find(|l| STOP_SIGNS.iter().any(|sign| l.contains(sign)))
        .map(str::trim)
}

impl Lab {
    /// Prepares the kernel (cached), builds the initramfs and boots the VM up to its command loop.
    /// A guest kernel that panics before its command loop is ready is booted once more: sid's
    /// kernel once died so under TCG two seconds into its boot (an oops in early init, before
    /// any module or test ran), and what the tests check starts after the boot.
    pub fn boot(opts: &LabOptions) -> Result<Lab> {
        match Lab::boot_once(opts) {
            Err(e) if format!("{e:#}").contains("Kernel panic") => {
                say(format!(
                    "lab: the guest kernel panicked while booting; booting once more ({})",
                    format!("{e:#}").lines().next().unwrap_or_default()
                ));
                Lab::boot_once(opts)
            }
            r => r,
        }
    }

    fn boot_once(opts: &LabOptions) -> Result<Lab> {
        let kernel = kernel::prepare(opts.series)?;
        let work = unique_workdir()?;
        let initrd = work.join("initrd.gz");
        let mut extra = opts.extra_files.clone();
        // TLS on NVMe/TCP needs the handshake daemon and a newer nvme-cli, from a newer Debian
        // (xtask/src/trixie.rs): only where the kernel can do it (its PSK keyring module).
        if kernel::has_module(&kernel.root, &kernel.release, "nvme-keyring") {
            extra.extend(trixie::guest_files().context("the guest's TLS userland")?);
        }
        initramfs::build(
            &initramfs::Contents {
                kernel: &kernel,
                agent: opts.agent.as_deref(),
                extra,
                tools: opts.extra_tools.clone(),
            },
            &work,
            &initrd,
        )?;
        let _ = std::fs::remove_dir_all(work.join("initramfs"));
        let host_port = match opts.host_port {
            Some(p) => p,
            None => free_port()?,
        };
        // A port just released may be handed out again: each one differs from those before.
        let mut more_ports: Vec<(u16, u16)> = Vec::new();
        for &guest in &opts.more_ports {
            let mut host = free_port()?;
            for _ in 0..20 {
                if host != host_port && more_ports.iter().all(|(_, h)| *h != host) {
                    break;
                }
                host = free_port()?;
            }
            more_ports.push((guest, host));
        }
        let mut netdev =
            format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{host_port}-:{GUEST_AGENT_PORT}");
        for (guest, host) in &more_ports {
            netdev += &format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}");
        }
        let mut extra_qemu = Vec::new();
        if let Some(p) = &opts.pcie_nvme {
            let image = work.join("pcie-nvme.img");
            std::fs::File::create(&image)
                .and_then(|f| f.set_len(p.size_mb << 20))
                .with_context(|| format!("creating {}", image.display()))?;
            extra_qemu = p.qemu_args(&image);
        }
        let console = work.join("console.log");
        let sock = work.join("ctl.sock");
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args([
            "-accel",
            accel(),
            "-cpu",
            "max",
            "-no-reboot",
            "-display",
            "none",
        ])
        .args(["-vga", "none", "-monitor", "none"])
        .args([
            "-m",
            &opts.memory_mb.to_string(),
            "-smp",
            &opts.cpus.to_string(),
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &kernel_cmdline(opts)])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .args(["-netdev", &netdev])
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .args(&extra_qemu)
        .args(&opts.qemu_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(work.join("qemu.err"))?));
        // SAFETY: prctl in the child between fork and exec only sets its death signal, so QEMU
        // never outlives the test or xtask process that started it.
        unsafe {
            qemu.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        say(format!(
            "lab: booting {} under QEMU ({}), agent port on 127.0.0.1:{host_port}",
            kernel.release,
            accel()
        ));
        let started = Instant::now();
        let child = Qemu::spawn(qemu)?;
        if let Err(e) = wait_for_console(&child, &console, &work, "@@READY", BOOT_TIMEOUT) {
            child.kill();
            return Err(e);
        }
        let control = Control::connect(&sock)?;
        say(format!(
            "lab: {} up in {:.1} s",
            kernel.release,
            started.elapsed().as_secs_f64()
        ));
        let mut lab = Lab {
            qemu: child,
            control,
            work,
            console,
            kernel,
            host_port,
            more_ports,
            pcie_nvme: opts.pcie_nvme.clone(),
        };
        // A first round trip proves the channel before any real command relies on it.
        let mut answered = false;
        for _ in 0..5 {
            if let Ok(pong) = lab.answers_within(Duration::from_secs(10)) {
                answered = pong;
                break;
            }
        }
        if !answered {
            bail!(
                "the lab's control channel does not answer; console tail:\n{}",
                tail(&lab.console(), 30)
            );
        }
        let failed = lab.console_lines("@@MODFAIL");
        if !failed.is_empty() {
            say(format!(
                "lab: modules that failed to load: {}",
                failed.join("; ")
            ));
        }
        Ok(lab)
    }

    /// Lines of the console that start with a marker.
    pub fn console_lines(&self, marker: &str) -> Vec<String> {
        std::fs::read_to_string(&self.console)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(marker))
            .map(str::to_owned)
            .collect()
    }

    /// The whole console (kernel log) so far.
    pub fn console(&self) -> String {
        read_lossy(&self.console)
    }

    /// How many bytes the console holds now: a mark for [`Lab::stopped_since`].
    pub fn console_mark(&self) -> u64 {
        std::fs::metadata(&self.console).map_or(0, |m| m.len())
    }

    /// Why the guest kernel stopped since `mark`: the console line saying so (a lockup, an RCU
    /// stall, a panic), when the guest also leaves a round trip unanswered for 20 s. `None` while
    /// it answers: a kernel that warned and went on is not a stopped guest.
    pub fn stopped_since(&mut self, mark: u64) -> Option<String> {
        let console = std::fs::read(&self.console).unwrap_or_default();
        let since = console.get(mark as usize..).unwrap_or_default();
        let why = stop_in(&String::from_utf8_lossy(since))?.to_owned();
        let answered = self
            .answers_within(Duration::from_secs(20))
            .unwrap_or(false);
        (!answered).then_some(why)
    }

    /// One round trip on the control channel: whether `echo pong` came back as `pong`; an
    /// error when nothing came back within `timeout` or the channel is closed.
    fn answers_within(&mut self, timeout: Duration) -> Result<bool> {
        Ok(self.sh_timeout("echo pong", timeout)?.out.trim() == "pong")
    }

    /// Runs a script in the guest and returns its output and exit code.
    pub fn sh_timeout(&mut self, script: &str, timeout: Duration) -> Result<GuestOutput> {
        self.control.run(script, timeout, &self.console)
    }

    pub fn sh(&mut self, script: &str) -> Result<GuestOutput> {
        self.sh_timeout(script, DEFAULT_TIMEOUT)
    }

    /// Runs a script that must succeed; returns its output.
    pub fn sh_ok(&mut self, script: &str) -> Result<String> {
        self.sh_ok_timeout(script, DEFAULT_TIMEOUT)
    }

    /// [`Lab::sh_ok`] for a script that may take longer than the default.
    pub fn sh_ok_timeout(&mut self, script: &str, timeout: Duration) -> Result<String> {
        let o = self.sh_timeout(script, timeout)?;
        if o.rc != 0 {
            bail!(
                "guest command failed (exit {}): {}\n{}",
                o.rc,
                first_line(script),
                o.out
            );
        }
        Ok(o.out)
    }

    /// An HTTP GET to the agent through the forwarded port: (status, body, time to answer).
    pub fn http_get(&self, path: &str) -> Result<(u16, String, Duration)> {
        http::http_get(self.host_port, path)
    }

    /// The host loopback port a guest port of [`LabOptions::more_ports`] is forwarded to.
    pub fn host_port_of(&self, guest_port: u16) -> Option<u16> {
        if guest_port == GUEST_AGENT_PORT {
            return Some(self.host_port);
        }
        self.more_ports
            .iter()
            .find(|(g, _)| *g == guest_port)
            .map(|(_, h)| *h)
    }

    pub fn work_dir(&self) -> &Path {
        &self.work
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.qemu.kill();
        if std::env::var_os("NVMEOF_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stop_in;

    #[test]
    fn a_stopped_guest_is_told_by_its_kernels_words() {
        // The console tail of the 6.1 guest that stopped in a fresh-clone run (first lines).
        let locked = "\
[   36.189997] rcu: INFO: rcu_preempt self-detected stall on CPU
[   36.189997] rcu: \t0-...!: (5018 ticks this GP) idle=de6c/1/0x4000000000000000 softirq=2677/2677 fqs=0
[   36.189997] rcu: rcu_preempt kthread timer wakeup didn't happen for 5250 jiffies! g3449 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402
[   60.576144] watchdog: BUG: soft lockup - CPU#0 stuck for 45s! [init:543]
";
        assert_eq!(
            stop_in(locked),
            Some("[   36.189997] rcu: INFO: rcu_preempt self-detected stall on CPU")
        );
        let soft = "[   60.576144] watchdog: BUG: soft lockup - CPU#0 stuck for 45s! [init:543]\n";
        assert_eq!(stop_in(soft), Some(soft.trim()));
        let panicked = "[   12.5] sysrq: Trigger a crash\n[   12.6] Kernel panic - not syncing: sysrq triggered crash\n";
        assert_eq!(
            stop_in(panicked),
            Some("[   12.6] Kernel panic - not syncing: sysrq triggered crash")
        );
        // A task blocked on a dead controller is what some tests make: the kernel goes on.
        let blocked = "\
[  245.1] INFO: task dd:812 blocked for more than 120 seconds.
[  245.1] nvme nvme2: I/O 12 QID 1 timeout, reconnecting
@@READY
";
        assert_eq!(stop_in(blocked), None);
        assert_eq!(stop_in(""), None);
    }
}
