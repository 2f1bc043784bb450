//! The variants `ebpf_bench programs` measures, each alone: the agent's pairs in every mode and
//! option, the floors and one-step programs, the minimal tracer and bpftrace.
use nvmeof_common::bench::programs as b;
use nvmeof_common::programs;

pub const EVENTS: [&str; 2] = [programs::NVME_SETUP_CMD, programs::NVME_COMPLETE_RQ];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Classic,
    Raw,
    Btf,
    /// bpftrace's script on the classic tracepoints.
    Bpftrace,
}

impl Hook {
    /// The empty program, the clock floor and the minimal tracer's setup program of this hook
    /// type: what a variant is compared with.
    pub fn floors(self) -> Option<[&'static str; 3]> {
        match self {
            Hook::Classic => Some([b::BENCH_TP_EMPTY, b::BENCH_TP_CLOCK, b::MIN_TP_SETUP]),
            Hook::Raw => Some([b::BENCH_RAW_EMPTY, b::BENCH_RAW_CLOCK, b::MIN_RAW_SETUP]),
            Hook::Btf => Some([b::BENCH_BTF_EMPTY, b::BENCH_BTF_CLOCK, b::MIN_BTF_SETUP]),
            Hook::Bpftrace => None,
        }
    }

    /// The agent's pair on this hook type.
    const fn ours(self) -> &'static [&'static str] {
        match self {
            Hook::Classic => &[programs::NVME_SETUP_CMD, programs::NVME_COMPLETE_RQ],
            Hook::Raw => &[programs::NVME_SETUP_CMD_RAW, programs::NVME_COMPLETE_RQ_RAW],
            Hook::Btf => &[programs::NVME_SETUP_CMD_BTF, programs::NVME_COMPLETE_RQ_BTF],
            Hook::Bpftrace => &[],
        }
    }

    /// The minimal tracer's pair on this hook type.
    const fn minimal(self) -> &'static [&'static str] {
        match self {
            Hook::Classic => &[b::MIN_TP_SETUP, b::MIN_TP_COMPLETE],
            Hook::Raw => &[b::MIN_RAW_SETUP, b::MIN_RAW_COMPLETE],
            Hook::Btf => &[b::MIN_BTF_SETUP, b::MIN_BTF_COMPLETE],
            Hook::Bpftrace => &[],
        }
    }
}

/// What a variant is, for where its programs live and what proves it did the work.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// One of the agent's pairs (its object).
    Ours,
    /// The agent's pair from a second copy of its object loaded with slow-command tracing on
    /// (`programs::SLOW_THRESHOLD_NS`: no workload command passes it, so what is priced is what every
    /// command pays while tracing is on, the setup keeping its identity).
    OursSlow,
    /// The agent's pair from a third copy of its object loaded with host wait on, whose
    /// `block_bio_queue` program is attached beside it and priced with it (its time added to
    /// the pair's, per command).
    OursHostWait,
    /// The minimal tracer (the benchmark object).
    Minimal,
    /// A floor or a floor plus one step (the benchmark object).
    Floor,
    /// bpftrace.
    Peer,
}

/// A variant: two programs are a pair (setup, completion); one program goes on both events.
pub struct Variant {
    pub label: &'static str,
    pub programs: &'static [&'static str],
    pub hook: Hook,
    pub role: Role,
}

const fn v(
    label: &'static str,
    programs: &'static [&'static str],
    hook: Hook,
    role: Role,
) -> Variant {
    Variant {
        label,
        programs,
        hook,
        role,
    }
}

/// One of the agent's pairs (`role` says which copy of its object), on `hook`'s tracepoints.
const fn ours(label: &'static str, hook: Hook, role: Role) -> Variant {
    v(label, hook.ours(), hook, role)
}

/// The minimal tracer's pair on `hook`'s tracepoints.
const fn minimal(label: &'static str, hook: Hook) -> Variant {
    v(label, hook.minimal(), hook, Role::Minimal)
}

/// A floor or a floor plus one step: one program on both events.
const fn floor(label: &'static str, programs: &'static [&'static str], hook: Hook) -> Variant {
    v(label, programs, hook, Role::Floor)
}

/// Each measured alone: a program first in a tracepoint's chain pays the cold misses of the
/// event (seen: with all attached at once the first program's cost doubled), so each variant
/// gets the tracepoints to itself, for the same workload, in one boot.
pub const VARIANTS: &[Variant] = &[
    ours("**ours, default mode: tp_btf pair**", Hook::Btf, Role::Ours),
    ours(
        "ours, tp_btf pair, slow-command tracing on (`--trace.slower-than=1s`)",
        Hook::Btf,
        Role::OursSlow,
    ),
    ours(
        "ours, tp_btf pair, host wait on (`--ebpf.host-wait`, its `block_bio_queue` program's time included)",
        Hook::Btf,
        Role::OursHostWait,
    ),
    ours("**ours, raw pair**", Hook::Raw, Role::Ours),
    ours("**ours, classic pair**", Hook::Classic, Role::Ours),
    minimal("minimal aya tracer, tp_btf (`bench_min_btf_*`)", Hook::Btf),
    minimal("minimal aya tracer, raw (`bench_min_raw_*`)", Hook::Raw),
    minimal(
        "minimal aya tracer, classic (`bench_min_tp_*`)",
        Hook::Classic,
    ),
    v(
        "bpftrace: `@s[...] = nsecs`, `hist()`, classic",
        &[],
        Hook::Bpftrace,
        Role::Peer,
    ),
    floor(
        "empty, classic (`bench_tp_empty` ×2)",
        &[b::BENCH_TP_EMPTY],
        Hook::Classic,
    ),
    floor(
        "clock floor, classic (`bench_tp_clock` ×2)",
        &[b::BENCH_TP_CLOCK],
        Hook::Classic,
    ),
    floor(
        "clock + one atomic add (`bench_tp_atomic` ×2)",
        &[b::BENCH_TP_ATOMIC],
        Hook::Classic,
    ),
    floor(
        "empty, raw (`bench_raw_empty` ×2)",
        &[b::BENCH_RAW_EMPTY],
        Hook::Raw,
    ),
    floor(
        "clock floor, raw (`bench_raw_clock` ×2)",
        &[b::BENCH_RAW_CLOCK],
        Hook::Raw,
    ),
    floor(
        "raw clock + one hash lookup (`bench_raw_hash` ×2)",
        &[b::BENCH_RAW_HASH],
        Hook::Raw,
    ),
    floor(
        "raw clock + one probe read (`bench_raw_probe` ×2)",
        &[b::BENCH_RAW_PROBE],
        Hook::Raw,
    ),
    floor(
        "raw clock + hash insert and delete (`bench_raw_inflight` ×2)",
        &[b::BENCH_RAW_INFLIGHT],
        Hook::Raw,
    ),
    floor(
        "raw clock + LRU lookup and store (`bench_raw_lru` ×2)",
        &[b::BENCH_RAW_LRU],
        Hook::Raw,
    ),
    floor(
        "empty, tp_btf (`bench_btf_empty` ×2)",
        &[b::BENCH_BTF_EMPTY],
        Hook::Btf,
    ),
    floor(
        "clock floor, tp_btf (`bench_btf_clock` ×2)",
        &[b::BENCH_BTF_CLOCK],
        Hook::Btf,
    ),
    floor(
        "tp_btf clock + one plain load (`bench_btf_load` ×2)",
        &[b::BENCH_BTF_LOAD],
        Hook::Btf,
    ),
];

impl Variant {
    /// (program, tracepoint) for each attachment.
    pub fn hooks(&self) -> Vec<(&'static str, &'static str)> {
        match self.programs {
            [one] => EVENTS.iter().map(|e| (*one, *e)).collect(),
            pair => pair.iter().copied().zip(EVENTS).collect(),
        }
    }
}
