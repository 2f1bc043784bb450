//! The agent side of the eBPF tracers, laid out as `nvmeof-ebpf` is: a shared runtime here and one
//! folder per tracer.
//!
//! - Shared: the objects build.rs embedded, the [`loader`] (what every tracer loads its object
//!   with, and every program's run statistics and map memory), the kernel's BTF ([`btf`]) and nvme_core's
//!   module tracepoints ([`module_tp`]), tracefs ([`tracefs`]) and the tracepoints' record layout
//!   ([`format`](mod@format)), and the [`worker`] each tracer runs its periodic work on.
//! - [`io`]: command latency, bytes, errors and queues (`nvme_setup_cmd`, `nvme_complete_rq`).
//! - [`state`]: controller state transitions and reconnect attempts (kprobes, or a sysfs poll).
//! - [`aen`]: asynchronous events per controller (`nvme_async_event`) and each path's ANA
//!   state transitions (a sysfs poll).
//!
//! Each tracer's folder owns its object's loading (`load.rs`: globals, map sizes, which programs
//! attach how), its draining or polling and its snapshot. Each tracer's `start` never fails: it returns a source handle that publishes snapshots, and
//! stops its worker (and detaches its programs) when dropped. The collectors
//! (`crate::collectors::io`, `crate::collectors::state`, `crate::collectors::aen`) only render
//! those snapshots; nothing here knows about metrics.
pub mod aen;
pub mod btf;
pub mod count_maps;
pub mod format;
pub mod io;
pub mod loader;
pub mod mapped;
pub mod module_tp;
pub mod queues;
pub mod state;
pub mod tracefs;

pub use loader::ProgramRun;

/// The I/O object built by build.rs; empty when the build skipped it (`AYA_BUILD_SKIP=1`). The
/// benchmark programs are in an object of their own (`nvmeof-bench`), which only the
/// `ebpf_bench` example embeds.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nvmeof"));

/// The state object: kprobes on controller state changes and reconnects.
pub static STATE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nvmeof-state"));

/// The queues object: an `iter/tcp` program naming each NVMe/TCP queue's connection.
pub static QUEUES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nvmeof-queues"));

/// The AEN object: a classic tracepoint on `nvme_async_event`.
pub static AEN_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nvmeof-aen"));

#[cfg(test)]
mod tests {
    /// The programs of an object, by name.
    fn program_names(object: &[u8]) -> Vec<String> {
        let obj = aya_obj::Object::parse(object).expect("an eBPF object");
        obj.programs.keys().cloned().collect()
    }

    #[test]
    fn the_agents_objects_hold_no_benchmark_program() {
        // Each object with at least the programs it must have: the io pairs, the state kprobes,
        // the AEN tracepoint and ANA kprobe, the queues' one iterator.
        let objects = [
            ("io", super::EBPF_OBJECT, 2),
            ("state", super::STATE_OBJECT, 2),
            ("aen", super::AEN_OBJECT, 2),
            ("queues", super::QUEUES_OBJECT, 1),
        ];
        for (what, object, least) in objects {
            if object.is_empty() {
                eprintln!("skipped: built with AYA_BUILD_SKIP");
                return;
            }
            let names = program_names(object);
            assert!(names.len() >= least, "{what}: {names:?}");
            let bench: Vec<_> = names.iter().filter(|n| n.starts_with("bench_")).collect();
            assert!(bench.is_empty(), "{what} object carries {bench:?}");
        }
        let io = program_names(super::EBPF_OBJECT);
        let ours = [
            super::io::load::PROGRAMS,
            super::io::load::BTF_PROGRAMS,
            super::io::load::RAW_PROGRAMS,
        ];
        for name in ours.concat() {
            assert!(io.iter().any(|n| n == name), "{name} missing: {io:?}");
        }
    }
}
