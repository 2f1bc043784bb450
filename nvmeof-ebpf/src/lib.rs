//! The programs are the `nvmeof` (src/main.rs) and `nvmeof-state` (src/state.rs) binaries, built
//! for bpfel-unknown-none by the agent's build script. This library holds what both use
//! ([`helpers`], built for BPF only) and lets the agent name the crate as a build dependency, so
//! cargo rebuilds the objects when their sources change.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
pub mod helpers;
