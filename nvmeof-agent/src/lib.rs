//! nvmeof-exporter's agent as a library, so tests and benchmarks drive the same code as the
//! binary. The flow follows the folders: `bpf` (kernel maps → drained model), `sysfs` (parsers:
//! a root path → typed structs), `collectors` (models → metric families), `exposition` (the
//! metric model and its formats), `http` (serving).
pub mod bpf;
pub mod cli;
pub mod collector;
pub mod collectors;
pub mod exposition;
pub mod http;
pub mod netlink;
pub mod nvme;
pub mod scrape;
pub mod sysfs;
