//! The peer: bpftrace's equivalent of our pair, a start time per (controller, queue, command id)
//! at setup and a histogram per (controller, queue) at completion, run as a child process. Its
//! programs' run time comes from `bpf_prog_info` like ours (what `bpftool prog show` prints for
//! them), read while it runs the same workload.
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use aya::programs::loaded_programs;
use aya_obj::generated::bpf_prog_type;

use crate::programs::run_workload;

/// The script. On 6.1 and later the completion's `cid` is the setup's command id (5.10 records
/// the bare tag there: the join would miss). The completion's `cid` is an `int` where the
/// setup's is a `u16`: bpftrace wants one key type per map, hence the cast.
pub const SCRIPT: &str =
    "tracepoint:nvme:nvme_setup_cmd { @s[args->ctrl_id, args->qid, args->cid] = nsecs; } \
tracepoint:nvme:nvme_complete_rq /@s[args->ctrl_id, args->qid, (uint16)args->cid]/ { \
@h[args->ctrl_id, args->qid] = hist(nsecs - @s[args->ctrl_id, args->qid, (uint16)args->cid]); \
delete(@s[args->ctrl_id, args->qid, (uint16)args->cid]); }";

/// How long bpftrace may take to compile and load its programs (seconds under TCG).
const START_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Run {
    pub run_time_ns: u64,
    pub runs: u64,
    /// Names of the programs it loaded (bpf_prog_info's 15 characters).
    pub programs: Vec<String>,
    /// Commands in its histograms when it exited.
    pub commands: u64,
}

/// The tracepoint programs loaded now: (id, name, run time ns, run count).
fn tracepoint_programs() -> anyhow::Result<Vec<(u32, String, u64, u64)>> {
    let mut out = Vec::new();
    for p in loaded_programs() {
        let p = p.context("listing loaded BPF programs")?;
        if p.program_type() == bpf_prog_type::BPF_PROG_TYPE_TRACEPOINT {
            out.push((
                p.id(),
                p.name_as_str().unwrap_or("").to_owned(),
                p.run_time().as_nanos() as u64,
                p.run_count(),
            ));
        }
    }
    Ok(out)
}

/// Starts bpftrace, waits until its two programs are loaded and it said it attaches them,
/// runs the workload, stops it (SIGINT: it prints its maps and exits).
pub fn measure(bpftrace: &Path, cmd: &[String]) -> anyhow::Result<Run> {
    let before: HashSet<u32> = tracepoint_programs()?.into_iter().map(|p| p.0).collect();
    let out_path = std::env::temp_dir().join(format!("ebpf-bench-bpftrace-{}", std::process::id()));
    let out = std::fs::File::create(&out_path).context("bpftrace's output file")?;
    let mut child = Command::new(bpftrace)
        .args(["-B", "line", "-e", SCRIPT])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", bpftrace.display()))?;
    let started = Instant::now();
    let ids: Vec<u32> = loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "bpftrace exited ({status}): {}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let new: Vec<u32> = tracepoint_programs()?
            .into_iter()
            .map(|p| p.0)
            .filter(|id| !before.contains(id))
            .collect();
        if new.len() == 2 && text.contains("Attaching") {
            break new;
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            bail!("bpftrace did not attach within {START_TIMEOUT:?}: {text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // It prints "Attaching 2 probes..." before it attaches: give the attach time to finish.
    std::thread::sleep(Duration::from_secs(2));
    let totals = || -> anyhow::Result<(u64, u64, Vec<String>)> {
        let mut t = (0, 0, Vec::new());
        for (id, name, ns, n) in tracepoint_programs()? {
            if ids.contains(&id) {
                t.0 += ns;
                t.1 += n;
                t.2.push(name);
            }
        }
        Ok(t)
    };
    let (ns0, n0, _) = totals()?;
    let workload = run_workload(cmd);
    let (ns1, n1, programs) = totals()?;
    // SAFETY: a signal to our own child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait()?;
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    workload?;
    if !status.success() {
        bail!("bpftrace failed ({status}): {text}");
    }
    Ok(Run {
        run_time_ns: ns1 - ns0,
        runs: n1 - n0,
        programs,
        commands: histogram_count(&text),
    })
}

/// The counts of every histogram in bpftrace's output, summed: bucket lines are
/// `[lo, hi)   N |@@@|` or `[v]   N |@|`.
fn histogram_count(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| {
            let end = l.find([')', ']'])?;
            l[end + 1..].split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn histogram_lines_are_summed() {
        let text = "Attaching 2 probes...\n\n@h[1, 1]:\n[0]                    2 |@@                   |\n[64K, 128K)         2900 |@@@@@@@@@@@@@@@@@@@@|\n[128K, 256K)          98 |@                   |\n\n@s[1, 1, 4097]: 123\n";
        assert_eq!(super::histogram_count(text), 3000);
    }
}
