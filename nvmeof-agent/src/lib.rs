//! nvmeof-exporter's agent as a library, so tests and benchmarks drive the same code as the
//! binary. The flow follows the folders, one way: `bpf` (the tracers: kernel maps → published
//! snapshots, one folder per tracer beside a shared runtime), `smart` (the SMART poller: admin
//! commands in the background → published snapshots), `sysfs` (parsers: a root path →
//! typed structs), `collectors` (snapshots and structs → metric families), `exposition` (the
//! metric model and its formats), `http` (serving). `cli` fills the `config` that the registry
//! and the server read; `tests/module_graph.rs` keeps the dependencies free of cycles.
pub mod bpf;
pub mod cli;
pub mod client;
pub mod collector;
pub mod collectors;
pub mod config;
pub mod exposition;
pub mod http;
pub mod netlink;
pub mod nvme;
pub mod scrape;
pub mod smart;
pub mod sysfs;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod worker;
