//! The QEMU process of a lab VM: started and reaped by a thread of its own, killed with the
//! process that started it, and the wait for its console to say the guest is ready.
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub(super) fn wait_for_console(
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
pub(super) struct Qemu {
    pid: i32,
    status: Arc<Mutex<Option<ExitStatus>>>,
    reaper: Option<std::thread::JoinHandle<()>>,
}

impl Qemu {
    pub(super) fn spawn(mut cmd: Command) -> Result<Qemu> {
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

    pub(super) fn exited(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn kill(&self) {
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

pub(super) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
