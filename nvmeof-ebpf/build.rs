//! Rebuild the programs when bpf-linker changes: the object depends on the linker too.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => {
            println!("cargo:warning=bpf-linker not found on PATH; run `cargo xtask bootstrap`")
        }
    }
}
