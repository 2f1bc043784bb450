//! Loading the eBPF programs and draining their maps.
pub mod format;
pub mod model;
pub mod namespaces;
pub mod status;
pub mod tracefs;

/// The eBPF object built by build.rs; empty when the build skipped it (`AYA_BUILD_SKIP=1`).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nvmeof"));
