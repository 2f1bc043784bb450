//! Exact command latencies from the kernel's own trace: `nvme:nvme_setup_cmd` and
//! `nvme:nvme_complete_rq` as tracefs prints them, joined per (queue, command id & 0xfff) the way
//! the programs join them (5.10 prints the bare tag at completion, later kernels the full id).
//! The reference the agent's quantiles are checked against.
use std::collections::{BTreeMap, HashMap};

use nvmeof_common::conn_errors::ErrorTimeouts;

/// One traced event: its timestamp in ns, whether it is a setup, the queue, the command id and,
/// for a setup, whether it is a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    pub ts_ns: u64,
    pub setup: bool,
    pub qid: u16,
    pub cid: u16,
    pub write: bool,
}

/// `SECONDS.FRACTION` (tracefs prints microseconds) as integer nanoseconds.
fn parse_ts_ns(s: &str) -> Option<u64> {
    let (sec, frac) = s.split_once('.')?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut frac_ns: u64 = frac.parse().ok()?;
    for _ in frac.len()..9 {
        frac_ns *= 10;
    }
    Some(sec.parse::<u64>().ok()? * 1_000_000_000 + frac_ns)
}

fn field<'a>(rest: &'a str, name: &str) -> Option<&'a str> {
    let at = rest.find(&format!(" {name}="))? + name.len() + 2;
    let v = &rest[at..];
    Some(v.split([',', ' ', ')']).next().unwrap_or(v))
}

/// What a command's latency as the programs read it may differ by from the trace's: tracefs
/// prints whole microseconds (1 µs), plus the residual gap between the two probes.
pub const TRACE_SLACK_NS: f64 = 3_000.0;

/// How far a span the programs timed may lie from the trace's when the emulation descheduled a
/// vCPU between the trace's and a program's clock reads of one tracepoint call: a host scheduler
/// slice (seen under TCG on a 2-core host: 4.4 ms on a 61 ms write, 6.6 ms on a host wait).
pub const EMULATION_STALL_NS: f64 = 15_000_000.0;

/// Where a histogram's classic bucket disagrees with the trace's spans beyond the spans lying
/// within the slack of its bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketMismatch {
    /// The bucket's bound, seconds.
    pub le: f64,
    /// Spans at or under the bound: the agent's count, the trace's.
    pub agent: f64,
    pub traced: f64,
    /// The trace's spans within the slack of the bound (either side is right for those).
    pub near: f64,
}

impl BucketMismatch {
    /// How many spans at least must have been timed on the other side of the bound.
    pub fn shifted(&self) -> f64 {
        (self.agent - self.traced).abs() - self.near
    }
}

/// The agent's classic buckets (`Metrics::buckets_moved_from`) against the same spans from the
/// trace, bound by bound: the bounds where the counts differ by more than the spans within
/// `slack_ns` of the bound. None when every span was timed as the trace timed it.
pub fn bucket_mismatches(
    buckets: &[(f64, f64)],
    traced_ns: &[u64],
    slack_ns: f64,
) -> Vec<BucketMismatch> {
    buckets
        .iter()
        .map(|&(le, agent)| {
            let bound = le * 1e9;
            let traced = traced_ns.iter().filter(|&&l| l as f64 <= bound).count() as f64;
            let near = traced_ns
                .iter()
                .filter(|&&l| (l as f64 - bound).abs() <= slack_ns)
                .count() as f64;
            BucketMismatch {
                le,
                agent,
                traced,
                near,
            }
        })
        .filter(|m| m.shifted() > 0.0)
        .collect()
}

/// The most spans any bound of [`bucket_mismatches`] says were shifted (0 when they agree).
pub fn most_shifted(mismatches: &[BucketMismatch]) -> f64 {
    mismatches
        .iter()
        .map(BucketMismatch::shifted)
        .fold(0.0, f64::max)
}

/// Parses one line of a tracefs `trace` file; `None` for anything that is not a setup or a
/// completion of controller `ctrl` (`nvmeN`).
pub fn parse_line(line: &str, ctrl: &str) -> Option<TraceEvent> {
    let (setup, at) = if let Some(i) = line.find(" nvme_setup_cmd: ") {
        (true, i)
    } else {
        (false, line.find(" nvme_complete_rq: ")?)
    };
    let ts = line[..at].split_whitespace().last()?.trim_end_matches(':');
    let ts_ns = parse_ts_ns(ts)?;
    let rest = line[at..].split_once(": ")?.1;
    let (c, rest) = rest.split_once(": ")?;
    if c != ctrl {
        return None;
    }
    let rest = format!(" {rest}");
    Some(TraceEvent {
        ts_ns,
        setup,
        qid: field(&rest, "qid")?.parse().ok()?,
        cid: field(&rest, "cmdid")?.parse().ok()?,
        write: setup && rest.contains("nvme_cmd_write"),
    })
}

/// Latencies of the write commands in a trace, in completion order.
#[derive(Clone, Debug, Default)]
pub struct Joined {
    pub latencies_ns: Vec<u64>,
    /// Completions of I/O queues with no write set up before them (other classes, or lost).
    pub unmatched: usize,
    /// Write setups still waiting for their completion at the end of the trace.
    pub pending: usize,
}

/// Joins setups and completions of I/O-queue writes per (queue, command id & 0xfff).
pub fn join_writes(events: &[TraceEvent]) -> Joined {
    let mut open: HashMap<(u16, u16), u64> = HashMap::new();
    let mut out = Joined::default();
    for e in events.iter().filter(|e| e.qid != 0) {
        let key = (e.qid, e.cid & 0x0fff);
        if e.setup {
            if e.write {
                open.insert(key, e.ts_ns);
            } else {
                open.remove(&key);
            }
        } else if let Some(start) = open.remove(&key) {
            out.latencies_ns.push(e.ts_ns.saturating_sub(start));
        } else {
            out.unmatched += 1;
        }
    }
    out.pending = open.len();
    out
}

/// One command of a trace: its queue, its command id as the setup printed it, and its latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traced {
    pub qid: u16,
    pub cid: u16,
    pub latency_ns: u64,
}

/// The writes of controller `ctrl` in a trace's text (`nvme_trace_stop`'s output), joined.
pub fn writes_in(text: &str, ctrl: &str) -> Joined {
    let events: Vec<TraceEvent> = text.lines().filter_map(|l| parse_line(l, ctrl)).collect();
    join_writes(&events)
}

/// Joins setups and completions of every command, any queue and class, per (queue, command id
/// & 0xfff), in completion order.
pub fn join_all(events: &[TraceEvent]) -> Vec<Traced> {
    let mut open: HashMap<(u16, u16), (u16, u64)> = HashMap::new();
    let mut out = Vec::new();
    for e in events {
        let key = (e.qid, e.cid & 0x0fff);
        if e.setup {
            open.insert(key, (e.cid, e.ts_ns));
        } else if let Some((cid, start)) = open.remove(&key) {
            out.push(Traced {
                qid: e.qid,
                cid,
                latency_ns: e.ts_ns.saturating_sub(start),
            });
        }
    }
    out
}

/// The q-quantile of exact values with the agent's rank rule: the value of rank ceil(q·n).
pub fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len() as u64;
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    sorted[(rank - 1) as usize]
}

/// The `kind` of an error status, written from the NVMe base specification's status tables and
/// not from the product's classification, so a wrong one there fails the lab tests. A status is
/// its Status Code Type (bits 10:8) and Status Code (bits 7:0).
fn status_kind(status: u16) -> &'static str {
    let (sct, sc) = (status >> 8 & 0x7, status & 0xff);
    match (sct, sc) {
        // Generic Command Status: Data Transfer Error and Transient Transport Error.
        (0, 0x04) | (0, 0x22) => "transport_error",
        // Generic: Command Abort Requested, Aborted due to SQ Deletion, due to Preempt and Abort.
        (0, 0x07) | (0, 0x08) | (0, 0x1b) => "abort",
        // Path Related Status: Command Aborted By Host (the host cancelled it: reset, timeout).
        (3, 0x71) => "abort",
        // Path Related Status the host detected (0x70..0x7f), the transport being down.
        (3, 0x70..=0x7f) => "host_path_error",
        // The rest of Path Related Status: internal path error, asymmetric access loss,
        // inaccessible or transition, controller pathing errors (0x60..0x6f).
        (3, _) => "path_error",
        // Generic, Command Specific, Media and Data Integrity, vendor specific.
        _ => "command_error",
    }
}

/// Error completions in a trace, by (controller, kind), classified from what tracefs prints and
/// nothing the agent computed: the status of each `nvme_complete_rq` (masked to its type and
/// code), and for keep-alive and fabrics commands the opcode of the matching `nvme_setup_cmd`
/// (joined per controller, queue and command id & 0xfff, as the programs join them). Kinds are
/// the `kind` label values of `nvmeof_connection_errors_total`. A command whose setup is in the
/// trace and whose completion came `timeouts` or later after it also counts as `timeout`
/// (whatever its status), as the programs count it.
pub fn error_completions(
    trace: &str,
    timeouts: &ErrorTimeouts,
) -> BTreeMap<(String, &'static str), u64> {
    // What the last setup seen per (controller, queue, cid & 0xfff) was, and when.
    #[derive(Clone, Copy)]
    enum Cmd {
        KeepAlive,
        Fabrics,
        Other,
    }
    let mut open: HashMap<(String, u16, u16), (Cmd, u64)> = HashMap::new();
    let mut out = BTreeMap::new();
    for line in trace.lines() {
        let (setup, at) = if let Some(i) = line.find(" nvme_setup_cmd: ") {
            (true, i)
        } else if let Some(i) = line.find(" nvme_complete_rq: ") {
            (false, i)
        } else {
            continue;
        };
        let Some(ts_ns) = line[..at]
            .split_whitespace()
            .last()
            .and_then(|t| parse_ts_ns(t.trim_end_matches(':')))
        else {
            continue;
        };
        let Some((_, rest)) = line[at..].split_once(": ") else {
            continue;
        };
        let Some((ctrl, rest)) = rest.split_once(": ") else {
            continue;
        };
        let rest = format!(" {rest}");
        let (Some(qid), Some(cid)) = (
            field(&rest, "qid").and_then(|v| v.parse::<u16>().ok()),
            field(&rest, "cmdid").and_then(|v| v.parse::<u16>().ok()),
        ) else {
            continue;
        };
        let key = (ctrl.to_owned(), qid, cid & 0x0fff);
        if setup {
            let cmd = if rest.contains("cmd=(nvme_fabrics_type_") {
                Cmd::Fabrics
            } else if qid == 0 && rest.contains("cmd=(nvme_admin_keep_alive") {
                Cmd::KeepAlive
            } else {
                Cmd::Other
            };
            open.insert(key, (cmd, ts_ns));
            continue;
        }
        let status = field(&rest, "status")
            .and_then(|v| u16::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0)
            & 0x07ff;
        let started = open.remove(&key);
        if let Some((_, start)) = started {
            // The admin queue's timeout for queue 0, the I/O one for the others; 0 is off.
            let limit = if qid == 0 {
                timeouts.admin_ns
            } else {
                timeouts.io_ns
            };
            if limit != 0 && ts_ns.saturating_sub(start) >= limit {
                *out.entry((ctrl.to_owned(), "timeout")).or_insert(0) += 1;
            }
        }
        if status == 0 {
            continue;
        }
        let kind = match started.map(|(cmd, _)| cmd).unwrap_or(Cmd::Other) {
            Cmd::Fabrics => "connect_failure",
            Cmd::KeepAlive => "keep_alive_failure",
            Cmd::Other => status_kind(status),
        };
        *out.entry((ctrl.to_owned(), kind)).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of the specification's status tables, by hand.
    /// Bounds at 1 ms and 10 ms; spans 0.5, 0.9995 (within the slack of 1 ms), 2 and 20 ms.
    /// Agreeing counts, a span the slack allows either side, and one span stalled past 10 ms.
    #[test]
    fn buckets_disagree_only_beyond_the_slack() {
        let traced = [500_000, 999_500, 2_000_000, 20_000_000];
        let agree = [(0.001, 2.0), (0.01, 3.0)];
        assert_eq!(bucket_mismatches(&agree, &traced, 1_000.0), []);
        let either_side = [(0.001, 1.0), (0.01, 3.0)];
        assert_eq!(bucket_mismatches(&either_side, &traced, 1_000.0), []);
        let stalled = [(0.001, 2.0), (0.01, 2.0)];
        let off = bucket_mismatches(&stalled, &traced, 1_000.0);
        assert_eq!(off.len(), 1);
        assert_eq!((off[0].le, most_shifted(&off)), (0.01, 1.0));
    }

    #[test]
    fn status_kinds_follow_the_specifications_tables() {
        for (status, kind) in [
            (0x004, "transport_error"),
            (0x022, "transport_error"),
            (0x007, "abort"),
            (0x008, "abort"),
            (0x01b, "abort"),
            (0x371, "abort"),
            (0x370, "host_path_error"),
            (0x372, "host_path_error"),
            (0x300, "path_error"),
            (0x302, "path_error"),
            (0x303, "path_error"),
            (0x360, "path_error"),
            (0x002, "command_error"),
            (0x00b, "command_error"),
            (0x182, "command_error"),
            (0x281, "command_error"),
            (0x7ff, "command_error"),
        ] {
            assert_eq!(status_kind(status), kind, "{status:#x}");
        }
    }

    /// Two classifications written apart, the product's for the kernel and this one from the
    /// specification, agree on every status the programs can see.
    #[test]
    fn the_products_classification_agrees_on_every_status() {
        use nvmeof_common::conn_errors::ConnErrorKind;
        for status in 1..=nvmeof_common::NVME_STATUS_MASK {
            assert_eq!(
                ConnErrorKind::of_status(status).as_str(),
                status_kind(status),
                "{status:#x}"
            );
        }
    }

    const SETUP_6_1: &str = "              dd-245     [001] .....    25.123456: nvme_setup_cmd: nvme2: disk=nvme2c2n1, qid=1, cmdid=4133, nsid=1, flags=0x0, meta=0x0, cmd=(nvme_cmd_write slba=0, len=7, ctrl=0x0, dsmgmt=0, reftag=0)";
    const DONE_6_1: &str = "          <idle>-0       [000] ..s1.    25.123999: nvme_complete_rq: nvme2: disk=nvme2c2n1, qid=1, cmdid=4133, res=0x0, retries=0, flags=0x0, status=0x0";

    #[test]
    fn parses_setup_and_completion_lines() {
        let s = parse_line(SETUP_6_1, "nvme2").unwrap();
        assert_eq!(
            s,
            TraceEvent {
                ts_ns: 25_123_456_000,
                setup: true,
                qid: 1,
                cid: 4133,
                write: true
            }
        );
        let c = parse_line(DONE_6_1, "nvme2").unwrap();
        assert_eq!(
            (c.ts_ns, c.setup, c.qid, c.cid),
            (25_123_999_000, false, 1, 4133)
        );
        assert_eq!(parse_line(SETUP_6_1, "nvme1"), None);
        assert_eq!(parse_line("# tracer: nop", "nvme2"), None);
    }

    #[test]
    fn joins_on_the_tag_as_5_10_prints_it() {
        // 5.10 prints the bare tag at completion: 4133 & 0xfff = 37.
        let done = DONE_6_1.replace("cmdid=4133", "cmdid=37");
        let ev: Vec<_> = [SETUP_6_1, &done]
            .iter()
            .filter_map(|l| parse_line(l, "nvme2"))
            .collect();
        let j = join_writes(&ev);
        assert_eq!(j.latencies_ns, vec![543_000]);
        assert_eq!((j.unmatched, j.pending), (0, 0));
    }

    #[test]
    fn exact_quantiles_use_the_ceiling_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(exact_quantile(&v, 0.5), 500);
        assert_eq!(exact_quantile(&v, 0.999), 999);
        assert_eq!(exact_quantile(&v, 0.0), 1);
        assert_eq!(exact_quantile(&[7], 0.99), 7);
    }

    #[test]
    fn classifies_error_completions_by_status_and_by_the_setup_opcode() {
        let trace = "\
 kworker-1 [000] .....  1.000000: nvme_setup_cmd: nvme2: qid=0, cmdid=5, nsid=0, flags=0x0, meta=0x0, cmd=(nvme_admin_keep_alive cdw10=00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00)
 kworker-1 [000] .....  1.000100: nvme_setup_cmd: nvme2: disk=nvme2c2n1, qid=1, cmdid=4133, nsid=1, flags=0x0, meta=0x0, cmd=(nvme_cmd_read slba=0, len=7, ctrl=0x0, dsmgmt=0, reftag=0)
 kworker-1 [000] .....  1.000200: nvme_setup_cmd: nvme2: qid=2, cmdid=0, nsid=0, flags=0x0, meta=0x0, cmd=(nvme_fabrics_type_connect recfmt=0, qid=2, sqsize=127, cattr=0, kato=0)
 kworker-1 [000] .....  2.000000: nvme_complete_rq: nvme2: qid=0, cmdid=5, res=0x0, retries=0, flags=0x0, status=0x371
 kworker-1 [000] .....  2.000001: nvme_complete_rq: nvme2: disk=nvme2c2n1, qid=1, cmdid=37, res=0x0, retries=0, flags=0x0, status=0x371
 kworker-1 [000] .....  2.000002: nvme_complete_rq: nvme2: qid=2, cmdid=0, res=0x0, retries=0, flags=0x0, status=0x4182
 kworker-1 [000] .....  2.000003: nvme_complete_rq: nvme3: disk=nvme3n1, qid=1, cmdid=9, res=0x0, retries=0, flags=0x0, status=0x400b
 kworker-1 [000] .....  0.999000: nvme_setup_cmd: nvme3: disk=nvme3n1, qid=1, cmdid=10, nsid=1, flags=0x0, meta=0x0, cmd=(nvme_cmd_read slba=8, len=7, ctrl=0x0, dsmgmt=0, reftag=0)
 kworker-1 [000] .....  2.000004: nvme_complete_rq: nvme3: disk=nvme3n1, qid=1, cmdid=10, res=0x0, retries=0, flags=0x0, status=0x0
";
        // 1 s for I/O queues: nvme3's read (0.999 to 2.000004) outlived it; 5 s for the admin
        // queue: the keep-alive (1.0 to 2.0) did not.
        let got = error_completions(
            trace,
            &ErrorTimeouts {
                io_ns: 1_000_000_000,
                admin_ns: 5_000_000_000,
            },
        );
        let want: BTreeMap<(String, &str), u64> = [
            (("nvme2".to_owned(), "keep_alive_failure"), 1),
            // cmdid 37 (0x025) matches no setup: its status decides, no timeout is known.
            (("nvme2".to_owned(), "abort"), 1),
            (("nvme2".to_owned(), "connect_failure"), 1),
            (("nvme3".to_owned(), "command_error"), 1),
            // nvme3's cmdid 10 completed well, after 1.0 s: a timeout all the same.
            (("nvme3".to_owned(), "timeout"), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
    }
}
