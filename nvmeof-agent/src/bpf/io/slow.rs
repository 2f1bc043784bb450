//! Slow-command tracing, agent side: the ring buffer the completions write slow commands into
//! (`nvmeof_common::slow`) → a reader thread → a [`SlowLog`] of the latest ones, which the
//! server lists at `/debug/slow` ([`to_json`]).
//!
//! Bounded all along: the kernel sends at most `--trace.slow-per-cpu` commands a second per CPU
//! and counts the rest; the ring holds [`RING_BYTES`]; the log keeps the latest
//! [`LOG_CAPACITY`], and a reader asks for those after a sequence number it has seen.
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aya::maps::{MapData, RingBuf};
use nvmeof_common::slow::{SlowCommand, SlowTrace};
use nvmeof_common::OpClass;
use serde::{Deserialize, Serialize};

use crate::worker::Worker;

/// The ring buffer's size: about 2900 commands of 88 bytes (and 8 of header), some seconds of
/// the most a 256-CPU node sends at the default rate before the reader, which wakes at once,
/// must have read them.
pub const RING_BYTES: u32 = 256 << 10;

/// Slow commands the log keeps.
pub const LOG_CAPACITY: usize = 1024;

/// How long the reader waits for the ring before it looks whether it should stop.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// `--trace.slower-than` and `--trace.slow-per-cpu`, and the log both the tracer and the server
/// hold.
#[derive(Clone, Debug, Default)]
pub struct SlowOptions {
    /// Commands this slow or slower are traced; zero: off.
    pub threshold: Duration,
    /// Most commands a CPU sends a second.
    pub per_cpu_per_second: u32,
    pub log: Arc<SlowLog>,
}

impl SlowOptions {
    pub fn is_on(&self) -> bool {
        !self.threshold.is_zero()
    }

    /// The programs' settings.
    pub fn trace(&self) -> SlowTrace {
        SlowTrace {
            threshold_ns: u64::try_from(self.threshold.as_nanos()).unwrap_or(u64::MAX),
            per_cpu_per_second: self.per_cpu_per_second,
            _pad: 0,
        }
    }
}

/// A slow command as the log keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Slow {
    /// Counts from 1 over the agent's life: a reader asks for those past the last it saw.
    pub seq: u64,
    /// When the command was set up.
    pub started: SystemTime,
    pub cmd: SlowCommand,
}

impl Slow {
    /// The submitting task's name.
    pub fn comm(&self) -> String {
        let comm = &self.cmd.ctx.comm;
        let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        String::from_utf8_lossy(&comm[..len]).into_owned()
    }
}

/// The latest slow commands, shared by the reader (which pushes) and the server (which lists).
#[derive(Debug, Default)]
pub struct SlowLog {
    inner: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    last_seq: u64,
    events: VecDeque<Slow>,
}

impl SlowLog {
    pub fn push(&self, cmd: SlowCommand, started: SystemTime) {
        let mut log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        log.last_seq += 1;
        let seq = log.last_seq;
        if log.events.len() == LOG_CAPACITY {
            log.events.pop_front();
        }
        log.events.push_back(Slow { seq, started, cmd });
    }

    /// At most `limit` of the latest commands whose sequence number is past `since`, oldest
    /// first.
    pub fn recent(&self, since: u64, limit: usize) -> Vec<Slow> {
        let log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let newer = log.events.iter().filter(|e| e.seq > since);
        let skip = newer.clone().count().saturating_sub(limit);
        newer.skip(skip).cloned().collect()
    }

    /// Slow commands received over the agent's life.
    pub fn received(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_seq
    }
}

/// A ring buffer record as a command; `None` for one of another size (an object of another
/// build), which the reader skips.
pub fn decode(bytes: &[u8]) -> Option<SlowCommand> {
    if bytes.len() != std::mem::size_of::<SlowCommand>() {
        return None;
    }
    // SAFETY: the length is checked, SlowCommand is plain old data (every bit pattern is a
    // value), and read_unaligned does not need the buffer's alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<SlowCommand>()) })
}

/// The wall-clock time of a `CLOCK_MONOTONIC` reading (`bpf_ktime_get_ns`).
pub fn wall_time(monotonic_ns: u64) -> SystemTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain syscall writing into a valid struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now_ns = (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64);
    SystemTime::now() - Duration::from_nanos(now_ns.saturating_sub(monotonic_ns))
}

/// Reads the ring into `log` until the worker is dropped: a `poll` that waits for the kernel's
/// wake-up (or [`POLL_TIMEOUT`]), then every record there is.
pub fn start_reader(mut ring: RingBuf<MapData>, log: Arc<SlowLog>) -> anyhow::Result<Worker> {
    let mut skipped = false;
    let tick = move || {
        let mut pfd = libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the result only says whether to read, and reading an empty
        // ring is harmless.
        let n = unsafe { libc::poll(&mut pfd, 1, POLL_TIMEOUT.as_millis() as libc::c_int) };
        if n < 0 || pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            // Not a wait: without this the worker would spin.
            std::thread::sleep(POLL_TIMEOUT);
        }
        while let Some(item) = ring.next() {
            match decode(&item) {
                Some(cmd) => log.push(cmd, wall_time(cmd.start_ns)),
                None if !skipped => {
                    skipped = true;
                    log::warn!(
                        "eBPF: a slow-command record of {} bytes, not {}: skipped (agent and \
                         object of different builds?)",
                        item.len(),
                        std::mem::size_of::<SlowCommand>()
                    );
                }
                None => {}
            }
        }
    };
    Ok(Worker::every("ebpf-slow", Duration::ZERO, tick)?)
}

/// One slow command as `/debug/slow` lists it (and `nvmeof-exporter trace` reads it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlowJson {
    pub seq: u64,
    /// RFC 3339, UTC, microseconds.
    pub started: String,
    pub latency_seconds: f64,
    pub controller: String,
    pub queue: u16,
    pub opclass: String,
    pub opcode: u8,
    pub nsid: u32,
    pub lba: u64,
    pub bytes: u32,
    pub cid: u16,
    pub status: u16,
    pub submit_cpu: u16,
    pub completion_cpu: u16,
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// false: the setup's record of the command was not found (evicted, or set up before
    /// tracing began), so namespace, LBA, command id, CPU and task are unknown (0).
    pub context: bool,
}

/// `events` as a JSON array, oldest first.
pub fn to_json(events: &[Slow]) -> String {
    let rows: Vec<SlowJson> = events
        .iter()
        .map(|e| {
            let c = &e.cmd;
            SlowJson {
                seq: e.seq,
                started: humantime::format_rfc3339_micros(e.started).to_string(),
                latency_seconds: c.latency_ns as f64 / 1e9,
                controller: format!("nvme{}", c.ctrl_id),
                queue: c.qid,
                opclass: OpClass::from_repr(c.opclass)
                    .map_or("unknown", OpClass::as_str)
                    .to_owned(),
                opcode: c.opcode,
                nsid: c.ctx.nsid,
                lba: c.ctx.slba,
                bytes: c.bytes,
                cid: c.ctx.cid,
                status: c.status,
                submit_cpu: c.ctx.cpu,
                completion_cpu: c.completion_cpu,
                pid: c.ctx.pid,
                comm: e.comm(),
                cgroup_id: c.ctx.cgroup_id,
                context: c.has_context != 0,
            }
        })
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(latency_ns: u64) -> SlowCommand {
        SlowCommand {
            latency_ns,
            ..Default::default()
        }
    }

    #[test]
    fn the_log_keeps_the_latest_and_lists_past_a_sequence_number() {
        let log = SlowLog::default();
        for i in 0..(LOG_CAPACITY as u64 + 10) {
            log.push(cmd(i), SystemTime::UNIX_EPOCH);
        }
        assert_eq!(log.received(), LOG_CAPACITY as u64 + 10);
        let all = log.recent(0, usize::MAX);
        assert_eq!(all.len(), LOG_CAPACITY);
        assert_eq!(all[0].seq, 11);
        let last3 = log.recent(0, 3);
        let seqs: Vec<u64> = last3.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1032, 1033, 1034]);
        assert!(log.recent(1034, 10).is_empty());
        assert_eq!(log.recent(1030, 10).len(), 4);
    }

    #[test]
    fn records_of_another_size_are_not_read() {
        let c = SlowCommand {
            latency_ns: 12_345,
            ctrl_id: 3,
            ..Default::default()
        };
        // SAFETY: viewing a plain struct as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&c as *const SlowCommand).cast::<u8>(),
                std::mem::size_of::<SlowCommand>(),
            )
        };
        assert_eq!(decode(bytes), Some(c));
        assert_eq!(decode(&bytes[1..]), None);
        assert_eq!(decode(&[]), None);
    }

    #[test]
    fn json_names_the_command_and_its_task() {
        let mut c = SlowCommand {
            latency_ns: 21_500_000,
            ctrl_id: 3,
            qid: 2,
            opcode: 1,
            opclass: OpClass::Write as u8,
            bytes: 4096,
            has_context: 1,
            ..Default::default()
        };
        c.ctx.nsid = 1;
        c.ctx.slba = 2048;
        c.ctx.pid = 77;
        c.ctx.comm[..2].copy_from_slice(b"dd");
        let log = SlowLog::default();
        log.push(c, SystemTime::UNIX_EPOCH + Duration::from_micros(1_500_000));
        let v: serde_json::Value = serde_json::from_str(&to_json(&log.recent(0, 10))).unwrap();
        let row = &v[0];
        assert_eq!(row["controller"], "nvme3");
        assert_eq!(row["queue"], 2);
        assert_eq!(row["opclass"], "write");
        assert_eq!(row["lba"], 2048);
        assert_eq!(row["comm"], "dd");
        assert_eq!(row["latency_seconds"], 0.0215);
        assert_eq!(row["started"], "1970-01-01T00:00:01.500000Z");
        assert_eq!(row["context"], true);
    }

    #[test]
    fn wall_time_of_now_is_now() {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as in wall_time.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let mono = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        let d = SystemTime::now()
            .duration_since(wall_time(mono))
            .unwrap_or_default();
        assert!(d < Duration::from_secs(1), "{d:?}");
    }
}
