//! The parsers of what the kernel, a device or an operator hands the agent, under random and
//! mutated input (proptest): sysfs attribute values, tracefs `format` files, NVMe log and
//! identify pages, BTF, netlink replies (sock_diag and rtnetlink), the web config and the
//! scraper's `Accept` header. Each must answer every input with a value or an error: no panic, no
//! input that takes a second.
//!
//! Inputs are arbitrary bytes and, so that parsing gets past the first checks, real samples (the
//! lab's captured pages and format files, a small well-formed BTF, replies shaped as the kernel's)
//! with a few bytes flipped, inserted, removed or cut. `cargo test` runs `NVMEOF_FUZZ_CASES`
//! inputs per parser (2000 by default, a twentieth of it for the web config, which goes through a
//! file); `cargo xtask fuzz` runs twelve million in all, optimised with overflow checks on
//! (BENCHMARKS.md has its figures).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use nvmeof_agent::bpf::{btf, format};
use nvmeof_agent::nvme::{ErrorLogEntry, IdentifyController, SmartLog};
use nvmeof_agent::sysfs::Spelled as _;
use nvmeof_agent::test_support::btf::BtfBuilder;
use nvmeof_agent::{exposition, netlink, sysfs};

/// What one input may take, on a loaded 2-core machine, before it counts as a hang.
const SLOW: Duration = Duration::from_secs(1);

fn cases() -> u32 {
    std::env::var("NVMEOF_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Runs `parse` on `cases()` inputs of `strategy`; a panic (proptest catches it and shrinks the
/// input) or a slow input fails the test.
fn fuzz<S: Strategy>(name: &str, strategy: S, parse: impl Fn(&S::Value))
where
    S::Value: std::fmt::Debug,
{
    fuzz_n(name, cases(), strategy, parse)
}

fn fuzz_n<S: Strategy>(name: &str, cases: u32, strategy: S, parse: impl Fn(&S::Value))
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let started = Instant::now();
    let slowest = std::cell::Cell::new(Duration::ZERO);
    TestRunner::new(config)
        .run(&strategy, |input| {
            let t = Instant::now();
            parse(&input);
            let took = t.elapsed();
            slowest.set(slowest.get().max(took));
            if took > SLOW {
                return Err(TestCaseError::fail(format!(
                    "{name}: {took:?} for one input"
                )));
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!(
        "fuzz {name}: {cases} inputs in {:.1} s, slowest {:?}",
        started.elapsed().as_secs_f64(),
        slowest.get()
    );
}

/// One of `seeds` with up to 8 edits: a byte set, inserted or removed, or the tail cut.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    (
        0..n,
        prop::collection::vec((0u8..4, any::<usize>(), any::<u8>()), 0..8),
    )
        .prop_map(move |(i, edits)| {
            let mut b = seeds[i].clone();
            for (op, at, v) in edits {
                let at = if b.is_empty() { 0 } else { at % (b.len() + 1) };
                match op {
                    0 if at < b.len() => b[at] = v,
                    1 => b.insert(at, v),
                    2 if at < b.len() => {
                        b.remove(at);
                    }
                    3 => b.truncate(at),
                    _ => {}
                }
            }
            b
        })
}

/// Random bytes, or a mutated seed, half and half.
fn bytes_or_mutated(seeds: Vec<Vec<u8>>, max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..max), mutated(seeds)]
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Files below `dir` (recursively) whose name satisfies `keep`, at most `max`.
fn files(dir: &Path, keep: &dyn Fn(&str) -> bool, max: usize, out: &mut Vec<Vec<u8>>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if out.len() >= max {
            return;
        }
        let ft = match e.file_type() {
            Ok(t) => t,
            Err(_) => continue,
        };
        if ft.is_dir() {
            files(&e.path(), keep, max, out);
        } else if ft.is_file() && keep(&e.file_name().to_string_lossy()) {
            if let Ok(b) = std::fs::read(e.path()) {
                out.push(b);
            }
        }
    }
}

#[test]
fn sysfs_values() {
    // Attribute values the lab captured, from every kernel's tree.
    let mut seeds = Vec::new();
    let names = [
        "state",
        "address",
        "ana_state",
        "stat",
        "transport",
        "queue_count",
    ];
    files(
        &repo().join("tests/fixtures"),
        &|n| names.contains(&n),
        400,
        &mut seeds,
    );
    assert!(seeds.len() > 20, "{} seeds", seeds.len());
    fuzz("sysfs values", bytes_or_mutated(seeds, 512), |b| {
        let t = text(b);
        let _ = sysfs::CtrlState::parse(&t);
        let _ = sysfs::Address::parse(&t);
        let _ = sysfs::AnaState::parse(&t);
        let _ = sysfs::blockstat::parse_stat(&t);
        let _ = sysfs::controller::ctrl_instance(&t);
    });
}

#[test]
fn tracefs_formats() {
    let mut seeds = Vec::new();
    files(
        &repo().join("tests/fixtures"),
        &|n| n == "format",
        64,
        &mut seeds,
    );
    // Only the tracepoints' (`tracepoints/<event>/format`), not the integrity ones.
    seeds.retain(|s| s.starts_with(b"name: "));
    assert!(seeds.len() >= 2, "{} seeds", seeds.len());
    let pair = (
        bytes_or_mutated(seeds.clone(), 2048),
        bytes_or_mutated(seeds, 2048),
    );
    fuzz("tracefs format", pair, |(a, b)| {
        let (a, b) = (text(a), text(b));
        let _ = format::parse_format(&a);
        let _ = format::layout_from_formats(&a, &b);
    });
}

#[test]
fn nvme_pages() {
    let mut seeds = Vec::new();
    files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smart/captured"),
        &|n| n.ends_with(".bin"),
        64,
        &mut seeds,
    );
    assert!(seeds.len() >= 3, "{} seeds", seeds.len());
    fuzz("nvme pages", bytes_or_mutated(seeds, 8192), |b| {
        let _ = SmartLog::decode(b);
        let _ = IdentifyController::decode(b);
        let _ = ErrorLogEntry::decode_page(b);
        let _ = ErrorLogEntry::decode(b);
    });
}

/// A small BTF blob of the shape the agent reads: `int`, a pointer, an array of ints, and
/// `struct request` with `q`, `mq_hctx`, `__data_len` and the array (so that mutations reach the
/// array's element and count, whose size the reader multiplies out).
fn small_btf() -> Vec<u8> {
    let mut b = BtfBuilder::new();
    b.int("int", 4); // 1
    b.ptr(0); // 2: void *
    b.array(1, 1, 4); // 3: int[4]
    b.strukt(
        "request",
        296,
        &[
            ("q", 2, 0, 0),
            ("mq_hctx", 2, 128, 0),
            ("__data_len", 1, 352, 0),
            ("ticks", 3, 384, 0),
        ],
    );
    b.finish()
}

#[test]
fn btf_blobs() {
    let seed = small_btf();
    let parsed = btf::Btf::parse(&seed).expect("the seed is well formed");
    assert_eq!(parsed.struct_size("request").unwrap(), 296);
    assert_eq!(
        parsed.member("request", "ticks").unwrap(),
        btf::Member {
            offset: 48,
            size: 16
        }
    );
    fuzz("btf", bytes_or_mutated(vec![seed.clone()], 1024), |b| {
        if let Ok(t) = btf::Btf::parse(b) {
            let _ = t.struct_size("request");
            let _ = t.member("request", "__data_len");
            let _ = t.member("request", "ticks");
            let _ = nvmeof_agent::bpf::io::request_btf::layout_from(&t);
        }
        let base = btf::Btf::parse(&seed).unwrap();
        if let Ok(t) = btf::Btf::parse_split(b, base) {
            let _ = t.member("request", "q");
        }
    });
}

#[test]
fn web_configs() {
    let dir = tempfile::tempdir().unwrap();
    let seeds: Vec<Vec<u8>> = [
        "basic_auth_users:\n  prometheus: $2y$04$3Q3bDK6uxl0gn5L1o9Hf2eUMoLFO1JjOKMoz0P8n1ROoSzhgr0s5a\n",
        "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS12\n",
        // The keys exporter-toolkit added later: suites, versions, client auth modes, headers.
        "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n  max_version: TLS13\n  prefer_server_cipher_suites: true\n  curve_preferences: [X25519]\n  client_auth_type: VerifyClientCertIfGiven\nhttp_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n",
        "a: &a [*a, *a, *a]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let path = dir.path().join("web.yml");
    // A file per input: a twentieth of the others' inputs takes about as long.
    let cases = (cases() / 20).max(100);
    fuzz_n("web config", cases, bytes_or_mutated(seeds, 1024), |b| {
        std::fs::write(&path, b).unwrap();
        let _ = nvmeof_agent::http::webconfig::WebConfig::load(&path);
    });
}

#[test]
fn accept_headers() {
    let seeds: Vec<Vec<u8>> = [
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3",
        "application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1",
        "text/plain",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("accept header", bytes_or_mutated(seeds, 512), |b| {
        let _ = exposition::negotiate(&text(b));
    });
}

/// A netlink message: header (length, type, flags, sequence, port) and payload, padded to 4.
fn nlmsg(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = ((16 + payload.len()) as u32).to_ne_bytes().to_vec();
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&[2, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(payload);
    m.resize(m.len().next_multiple_of(4), 0);
    m
}

/// A route attribute (length, type, value), padded to 4.
fn rtattr(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(a.len().next_multiple_of(4), 0);
    a
}

#[test]
fn netlink_replies() {
    // Two TCP sockets as a 6.1 kernel describes them (inet_diag_msg, tcp_info, shutdown,
    // cgroup id), then NLMSG_DONE.
    let mut diag = Vec::new();
    for family in [2u8, 10] {
        let mut p = vec![0u8; 72];
        p[..2].copy_from_slice(&[family, 1]);
        p[4..8].copy_from_slice(&[0x9c, 0x40, 0x11, 0x44]);
        p.extend(rtattr(2, &[7; 232]));
        p.extend(rtattr(8, &[0]));
        p.extend(rtattr(21, &[1; 8]));
        diag.extend(nlmsg(20, &p));
    }
    diag.extend(nlmsg(3, &[0; 4]));
    // Two addresses (IPv4 with its label, IPv6 with cache info and flags), then NLMSG_DONE.
    let mut route = Vec::new();
    let mut v4 = vec![2, 24, 0, 0, 5, 0, 0, 0];
    v4.extend(rtattr(1, &[192, 0, 2, 1]));
    v4.extend(rtattr(2, &[192, 0, 2, 1]));
    v4.extend(rtattr(3, b"veth0\0"));
    route.extend(nlmsg(20, &v4));
    let mut v6 = vec![10, 64, 0, 0, 5, 0, 0, 0];
    v6.extend(rtattr(
        1,
        &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    ));
    v6.extend(rtattr(6, &[0; 16]));
    v6.extend(rtattr(8, &[0x80, 0, 0, 0]));
    route.extend(nlmsg(20, &v6));
    route.extend(nlmsg(3, &[0; 4]));
    // The seeds read as they should, before any edit.
    let mut done = false;
    let socks: Vec<_> = netlink::messages(&diag, &mut done)
        .unwrap()
        .iter()
        .filter_map(|(_, p)| netlink::sock_diag::parse_msg(p))
        .collect();
    assert!(done);
    assert_eq!(socks.len(), 2);
    assert_eq!((socks[1].sport, socks[1].dport), (40000, 4420));
    assert_eq!(socks[1].rtt_us, Some(0x0707_0707));
    let addrs: Vec<_> = netlink::messages(&route, &mut done)
        .unwrap()
        .iter()
        .filter_map(|(_, p)| netlink::addr::parse_msg(p))
        .collect();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0].label, "veth0");
    fuzz(
        "netlink replies",
        bytes_or_mutated(vec![diag, route], 1024),
        |b| {
            if let Ok(m) = netlink::messages(b, &mut false) {
                for (_, p) in m {
                    let _ = netlink::sock_diag::parse_msg(p);
                    let _ = netlink::addr::parse_msg(p);
                }
            }
            let _ = netlink::sock_diag::parse_msg(b);
            let _ = netlink::addr::parse_msg(b);
        },
    );
}
