//! `nvmeof-exporter trace`: the slow commands of a running agent as they come, one line each
//! (or one JSON object each, for scripts). It polls the agent's `/debug/slow` past the last
//! sequence number it printed; the agent's `--trace.slower-than` is the floor of what it can
//! show, `--slower-than` filters above it.
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser as _;
use hyper::StatusCode;

use crate::bpf::io::slow::SlowJson;
use crate::config::{parse_duration, parse_threshold};

/// The subcommand's name: `nvmeof-exporter trace ...`.
pub const NAME: &str = "trace";

// The flags, parsed by clap's derive: each field is typed where it is declared.
#[derive(clap::Parser)]
#[command(
    name = "nvmeof-exporter trace",
    no_binary_name = true,
    about = "Follow the slow commands of a running nvmeof-exporter (its --trace.slower-than must be on)."
)]
struct Options {
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = super::DEFAULT_AGENT,
        help = "The agent's --web.listen-address (plain HTTP)."
    )]
    agent: String,
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "0s",
        value_parser = parse_threshold,
        help = "Only commands this slow or slower (the agent lists those past its own --trace.slower-than)."
    )]
    slower_than: Duration,
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1s",
        value_parser = parse_duration,
        help = "How often to ask the agent."
    )]
    interval: Duration,
    #[arg(
        long = "for",
        value_name = "DURATION",
        value_parser = parse_duration,
        help = "Stop after this long (default: until interrupted)."
    )]
    stop_after: Option<Duration>,
    #[arg(long, help = "One JSON object per line, as /debug/slow lists them.")]
    json: bool,
    #[arg(
        long,
        help = "Start with the commands the agent already holds (default: only new ones)."
    )]
    all: bool,
}

/// One command as a line a person reads: when, how slow, where, what, whose.
pub fn line(c: &SlowJson) -> String {
    format!(
        "{}  {:>9.3} ms  {}/q{:<3} {:<7} nsid {} lba {} {} B  cid {}  status {:#x}  cpu {}->{}  {} {}{}",
        c.started,
        c.latency_seconds * 1e3,
        c.controller,
        c.queue,
        c.opclass,
        c.nsid,
        c.lba,
        c.bytes,
        c.cid,
        c.status,
        c.submit_cpu,
        c.completion_cpu,
        c.pid,
        c.comm,
        if c.context { "" } else { "  (setup not seen)" }
    )
}

/// Runs `nvmeof-exporter trace ARGS` (`args` after the program name and `trace`).
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    let o = Options::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nvmeof-exporter trace: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(follow(o)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nvmeof-exporter trace: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn follow(o: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let timeout = o.interval.max(Duration::from_secs(5));
    let mut since = match o.all {
        true => 0,
        // The newest the agent holds: only what comes after it is printed.
        false => fetch(&o.agent, 0, 1, timeout)
            .await?
            .last()
            .map_or(0, |c| c.seq),
    };
    let mut out = std::io::stdout().lock();
    loop {
        for c in fetch(&o.agent, since, crate::bpf::io::slow::LOG_CAPACITY, timeout).await? {
            since = since.max(c.seq);
            if c.latency_seconds < o.slower_than.as_secs_f64() {
                continue;
            }
            let text = match o.json {
                true => serde_json::to_string(&c).context("JSON")?,
                false => line(&c),
            };
            // A closed pipe (`| head`) ends the trace.
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                return Ok(());
            }
        }
        if o.stop_after.is_some_and(|d| started.elapsed() >= d) {
            return Ok(());
        }
        tokio::time::sleep(o.interval).await;
    }
}

async fn fetch(
    agent: &str,
    since: u64,
    limit: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<SlowJson>> {
    let path = format!("/debug/slow?since={since}&limit={limit}");
    let (status, body) = super::get(agent, &path, timeout).await?;
    match status {
        StatusCode::OK => serde_json::from_slice(&body).context("the agent's /debug/slow"),
        StatusCode::NOT_FOUND => bail!(
            "the agent at {agent} does not trace slow commands: start it with --trace.slower-than"
        ),
        s => bail!("{path}: {s}: {}", String::from_utf8_lossy(&body).trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_when_how_slow_where_what_and_whose() {
        let c = SlowJson {
            seq: 3,
            started: "2026-12-06T16:20:01.123456Z".into(),
            latency_seconds: 0.0612,
            controller: "nvme2".into(),
            queue: 1,
            opclass: "write".into(),
            opcode: 1,
            nsid: 1,
            lba: 2048,
            bytes: 4096,
            cid: 16401,
            status: 0,
            submit_cpu: 0,
            completion_cpu: 1,
            pid: 512,
            comm: "dd".into(),
            cgroup_id: 1,
            context: true,
        };
        assert_eq!(
            line(&c),
            "2026-12-06T16:20:01.123456Z     61.200 ms  nvme2/q1   write   nsid 1 lba 2048 4096 B  cid 16401  status 0x0  cpu 0->1  512 dd"
        );
    }

    #[test]
    fn flags() {
        let o = Options::try_parse_from(["--slower-than=10ms", "--for=30s", "--json"]).unwrap();
        assert_eq!(o.slower_than, Duration::from_millis(10));
        assert_eq!(o.stop_after, Some(Duration::from_secs(30)));
        assert!(o.json && !o.all);
        assert_eq!(o.agent, "127.0.0.1:9856");
        assert!(Options::try_parse_from(["--interval=0s"]).is_err());
    }
}
