//! The programs are the `nvmeof` (src/main.rs), `nvmeof-state` (src/state.rs), `nvmeof-aen`
//! (src/aen.rs) and, for the benchmark only, `nvmeof-bench` (src/bench.rs) binaries, built for
//! bpfel-unknown-none by the agent's build script. This library holds what they share ([`helpers`], built for BPF only, and
//! [`gpl_object!`]) and lets the agent name the crate as a build dependency, so cargo rebuilds the
//! objects when their sources change.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
pub mod helpers;

/// What every object of this crate needs beside its programs: a panic handler (a program cannot
/// unwind; the verifier proves every path ends) and the licence section, GPL, which the
/// kernel's GPL-only helpers (`bpf_probe_read_kernel`, `bpf_ktime_get_ns`'s peers) require.
#[macro_export]
macro_rules! gpl_object {
    () => {
        #[cfg(not(test))]
        #[panic_handler]
        fn panic(_info: &core::panic::PanicInfo) -> ! {
            loop {}
        }

        #[link_section = "license"]
        #[no_mangle]
        static LICENSE: [u8; 4] = *b"GPL\0";
    };
}
