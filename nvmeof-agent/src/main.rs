fn main() {
    println!(
        "nvmeof-exporter: eBPF object of {} bytes",
        nvmeof_agent::bpf::EBPF_OBJECT.len()
    );
}
