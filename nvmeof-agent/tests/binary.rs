//! The `nvmeof-exporter` binary as a process: flag errors exit with code 2, and it serves a
//! fixture tree until SIGTERM, then exits 0.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nvmeof-exporter");

#[test]
fn invalid_flags_exit_2_with_a_message() {
    for flag in [
        "--collector.timeout=soon",
        "--web.listen-address=9856",
        "--no-such-flag",
    ] {
        let out = Command::new(BIN).arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{flag}: {err}");
        assert!(!err.contains("panicked"), "{flag}: {err}");
    }
}

#[test]
fn serves_then_stops_cleanly_on_sigterm() {
    let fixture = common::sysfs_6_1();
    let mut child = KillOnDrop(
        Command::new(BIN)
            .arg("--web.listen-address=127.0.0.1:0")
            .arg(format!("--path.sysfs={}", fixture.root.display()))
            // The eBPF and SMART collectors read this host's kernel and /dev, not the tree.
            .args(["--no-collector.io", "--no-collector.smart"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The log line "listening on ADDR (metrics at /metrics)" gives the port the kernel chose.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            let rest = l.split("listening on ").nth(1)?;
            Some(rest.split(' ').next()?.to_owned())
        })
        .expect("a listening line");
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(
        "nvmeof_subsystem_paths{subsystem=\"nqn.2026-11.io.nvmeof-exporter.lab:tcp\"} 2\n"
    ));

    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

/// The soft and hard limits of open files of a running process, from /proc.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next().unwrap().to_owned();
    let hard = fields.next().unwrap().to_owned();
    (soft, hard)
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    use std::os::unix::process::CommandExt as _;
    let fixture = common::sysfs_6_1();
    let mut cmd = Command::new(BIN);
    cmd.arg("--web.listen-address=127.0.0.1:0")
        .arg(format!("--path.sysfs={}", fixture.root.display()))
        .args(["--no-collector.io", "--no-collector.smart"])
        .stderr(Stdio::piped());
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = lim.rlim_max.min(512);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let lines: Vec<String> = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.contains("listening on "))
        .collect();
    let (soft, hard) = open_file_limits(child.id());
    assert_eq!(soft, hard, "{lines:?}");
    if hard != "512" {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("open-file limit raised from 512 to {hard}"))),
            "{lines:?}"
        );
    }
}

/// Kills the exporter when a failed assertion unwinds, so no process outlives the test.
struct KillOnDrop(std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
