//! Empty on purpose: the programs are the `nvmeof` (src/main.rs) and
//! `nvmeof-state` (src/state.rs) binaries, built for
//! bpfel-unknown-none by the agent's build script. This library target only lets the agent name
//! the crate as a build dependency, so cargo rebuilds the object when its sources change.
#![no_std]
