//! The lab VM: a real Debian kernel under QEMU (TCG), whose nvmet target serves NVMe-oF to its
//! own host side. The host drives it through a control channel on the VM's second serial port:
//! [`Lab::sh`] runs a script in the guest (with the functions of `guest/lab.sh` defined) and
//! returns its output and exit code. The agent's port is forwarded to host loopback.
//!
//! The guest has no way out: its only NIC is QEMU's user network in `restrict=on` mode, which
//! carries the forwarded port and nothing else.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::say;
use crate::kernel::{self, Kernel, Series};
use crate::{cache, initramfs};

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
            memory_mb: 1536,
            cpus: 2,
            qemu_args: Vec::new(),
            extra_files: Vec::new(),
            extra_tools: Vec::new(),
            pcie_nvme: None,
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
    ctl: BufReader<UnixStream>,
    work: PathBuf,
    console: PathBuf,
    pub kernel: Kernel,
    pub host_port: u16,
    /// The emulated PCIe controller, when the lab has one.
    pub pcie_nvme: Option<PcieNvme>,
    next_id: u64,
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

impl Lab {
    /// Prepares the kernel (cached), builds the initramfs and boots the VM up to its command loop.
    pub fn boot(opts: &LabOptions) -> Result<Lab> {
        let kernel = kernel::prepare(opts.series)?;
        let work = unique_workdir()?;
        let initrd = work.join("initrd.gz");
        initramfs::build(
            &initramfs::Contents {
                kernel: &kernel,
                agent: opts.agent.as_deref(),
                extra: opts.extra_files.clone(),
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
        // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can time
        // out and panic the boot ("IO-APIC + timer doesn't work"), seen on 6.1.
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 nvme_core.multipath=Y no_timer_check",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .args(["-netdev"])
        .arg(format!(
            "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{host_port}-:{GUEST_AGENT_PORT}"
        ))
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
        let stream = UnixStream::connect(&sock).with_context(|| {
            format!("connecting to the lab's control channel {}", sock.display())
        })?;
        say(format!(
            "lab: {} up in {:.1} s",
            kernel.release,
            started.elapsed().as_secs_f64()
        ));
        let mut lab = Lab {
            qemu: child,
            ctl: BufReader::new(stream),
            work,
            console,
            kernel,
            host_port,
            pcie_nvme: opts.pcie_nvme.clone(),
            next_id: 1,
        };
        // A first round trip proves the channel before any real command relies on it.
        let mut answered = false;
        for _ in 0..5 {
            if let Ok(o) = lab.sh_timeout("echo pong", Duration::from_secs(10)) {
                answered = o.out.trim() == "pong";
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
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Runs a script in the guest and returns its output and exit code.
    pub fn sh_timeout(&mut self, script: &str, timeout: Duration) -> Result<GuestOutput> {
        let id = self.next_id;
        self.next_id += 1;
        // The leading newline ends any partial line a lost byte may have left in the guest.
        let line = format!("\nCMD {id} {}\n", base64_encode(script.as_bytes()));
        self.ctl
            .get_mut()
            .write_all(line.as_bytes())
            .context("writing to the lab's control channel")?;
        let deadline = Instant::now() + timeout;
        let mut body = String::new();
        let mut inside = false;
        loop {
            let line = self
                .read_line(deadline)
                .with_context(|| format!("waiting for the guest to run: {}", first_line(script)))?;
            let line = line.trim_end();
            if line == format!("@@BEGIN {id}") {
                inside = true;
            } else if let Some(rest) = line.strip_prefix(&format!("@@END {id} ")) {
                let rc: i32 = rest.trim().parse().unwrap_or(-1);
                let bytes = base64_decode(&body)?;
                return Ok(GuestOutput {
                    rc,
                    out: String::from_utf8_lossy(&bytes).into_owned(),
                });
            } else if inside {
                body.push_str(line);
            }
        }
    }

    pub fn sh(&mut self, script: &str) -> Result<GuestOutput> {
        self.sh_timeout(script, DEFAULT_TIMEOUT)
    }

    /// Runs a script that must succeed; returns its output.
    pub fn sh_ok(&mut self, script: &str) -> Result<String> {
        let o = self.sh(script)?;
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

    fn read_line(&mut self, deadline: Instant) -> Result<String> {
        let mut buf = Vec::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                bail!("timed out; console tail:\n{}", tail(&self.console(), 30));
            }
            self.ctl.get_ref().set_read_timeout(Some(deadline - now))?;
            match self.ctl.read_until(b'\n', &mut buf) {
                Ok(0) => bail!(
                    "the lab VM closed its control channel; console tail:\n{}",
                    tail(&self.console(), 30)
                ),
                Ok(_) if buf.ends_with(b"\n") => {
                    return Ok(String::from_utf8_lossy(&buf).into_owned())
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e).context("reading the lab's control channel"),
            }
        }
    }

    /// An HTTP GET to the agent through the forwarded port: (status, body, time to answer).
    pub fn http_get(&self, path: &str) -> Result<(u16, String, Duration)> {
        http_get(self.host_port, path)
    }

    pub fn work_dir(&self) -> &Path {
        &self.work
    }
}

/// A minimal HTTP/1.1 GET on host loopback (no client library needed for a test).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String, Duration)> {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("reading the HTTP answer")?;
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("HTTP answer without a header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("HTTP answer without a status")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body, elapsed))
}

fn dechunk(mut s: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("bad chunk header")?;
        let n = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("short chunk")?);
        s = rest.get(n + 2..).context("short chunk trailer")?;
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

fn wait_for_console(
    child: &Qemu,
    console: &Path,
    work: &Path,
    marker: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let text =
            String::from_utf8_lossy(&std::fs::read(console).unwrap_or_default()).into_owned();
        if text.lines().any(|l| l.starts_with(marker)) {
            return Ok(());
        }
        if let Some(status) = child.exited() {
            let err = std::fs::read_to_string(work.join("qemu.err")).unwrap_or_default();
            bail!(
                "QEMU exited ({status}) before the guest was ready: {err}\nconsole tail:\n{}",
                tail(&text, 30)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the guest was not ready within {timeout:?}; console tail:\n{}",
                tail(&text, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A QEMU process. It is started and reaped by a thread of its own that lives as long as QEMU:
/// the kernel sends PR_SET_PDEATHSIG when the *thread* that forked the child ends, and a test
/// harness ends each test's thread while the shared VM must live on.
struct Qemu {
    pid: i32,
    status: Arc<Mutex<Option<ExitStatus>>>,
    reaper: Option<std::thread::JoinHandle<()>>,
}

impl Qemu {
    fn spawn(mut cmd: Command) -> Result<Qemu> {
        let status = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel();
        let st = status.clone();
        let reaper = std::thread::spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(child.id() as i32));
                if let Ok(s) = child.wait() {
                    *st.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        });
        let pid = rx
            .recv()
            .context("the QEMU reaper thread ended early")?
            .context("starting qemu-system-x86_64 (run `cargo xtask bootstrap`)")?;
        Ok(Qemu {
            pid,
            status,
            reaper: Some(reaper),
        })
    }

    fn exited(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kill(&self) {
        if self.exited().is_none() {
            // SAFETY: signalling our own child, which the reaper has not yet reaped.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
        if let Some(r) = self.reaper.take() {
            let _ = r.join();
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn first_line(script: &str) -> &str {
    script.trim().lines().next().unwrap_or("")
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' | b' ' => continue,
            _ => bail!("invalid base64 byte {c:#x} from the guest"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for n in 0..300usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let enc = base64_encode(&data);
            assert_eq!(enc.len() % 4, 0);
            assert_eq!(base64_decode(&enc).unwrap(), data, "n={n}");
        }
        assert_eq!(base64_encode(b"lab"), "bGFi");
        assert_eq!(base64_encode(b"la"), "bGE=");
        assert!(base64_decode("b*Fi").is_err());
    }

    #[test]
    fn dechunks_http_bodies() {
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            "abcde"
        );
        assert!(dechunk("zz\r\n").is_err());
    }
}
