//! The project's own tooling as a library: the bootstrap that installs what builds need, the
//! kernels fetched from Debian's archive, the initramfs and the QEMU lab VM with its control
//! channel. `main.rs` is the `cargo xtask` front; the end-to-end tests drive [`lab::Lab`] directly.
pub mod apt;
pub mod arm64;
pub mod bench;
pub mod bootstrap;
pub mod cache;
pub mod capture;
pub mod cmd;
pub mod deploy_tools;
pub mod elf;
pub mod initramfs;
pub mod kernel;
pub mod lab;
pub mod monitoring;
pub mod prometheus;
pub mod scrape_peer;
pub mod support;
pub mod trixie;
pub mod weight;
