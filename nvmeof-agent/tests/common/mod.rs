//! What the integration tests share: the sysfs tree they run against and a scraper over it.
#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;

use nvmeof_agent::cli::parse_from;
use nvmeof_agent::collectors::build_enabled;
use nvmeof_agent::scrape::Scraper;

#[allow(unused_imports)] // each test binary uses its own part
pub use nvmeof_agent::test_support::{sysfs_6_1, Fixture};

/// A scraper with the default sysfs collectors over `sysfs`, as the binary would build it. The
/// `io` (eBPF) and `smart` (admin commands) collectors read the running kernel and devices, not
/// the tree, so they are off here; their own tests cover them.
pub fn scraper(sysfs: &Path, extra_flags: &[&str]) -> Scraper {
    let config = config(sysfs, extra_flags);
    Scraper::new(
        build_enabled(&config).expect("collectors build"),
        config.collector_timeout,
    )
}

/// The flags of [`scraper`], parsed.
fn config(sysfs: &Path, extra_flags: &[&str]) -> nvmeof_agent::config::Config {
    let mut args = vec![
        "nvmeof-exporter".to_owned(),
        format!("--path.sysfs={}", sysfs.display()),
        "--no-collector.io".to_owned(),
        "--no-collector.smart".to_owned(),
    ];
    args.extend(extra_flags.iter().map(|s| s.to_string()));
    parse_from(args).expect("flags parse")
}

/// Masks what changes from run to run (collector durations) so whole outputs compare.
pub fn normalize(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("nvmeof_exporter_collector_duration_seconds{") {
                let (series, _) = l.rsplit_once(' ').unwrap_or((l, ""));
                format!("{series} <duration>")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Writes a raw HTTP request on `stream` and reads the whole answer (the server closes after
/// `Connection: close`), within 10 s. The read's own error comes back beside what was read:
/// a TLS peer that refuses the client may end the stream without a clean close.
pub async fn send<S>(stream: S, request: &[u8]) -> (String, std::io::Result<()>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (out, read) = send_bytes(stream, request).await;
    (String::from_utf8_lossy(&out).into_owned(), read)
}

/// [`send`], the answer as bytes (a protobuf body is no text).
pub async fn send_bytes<S>(mut stream: S, request: &[u8]) -> (Vec<u8>, std::io::Result<()>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut out),
    )
    .await
    .expect("an answer within 10 s")
    .map(|_| ());
    (out, read)
}

/// The status code of a raw HTTP answer; 0 when there is none.
pub fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// [`scraper`] with an `io` collector rendering `io` (a drained state) beside the sysfs ones,
/// run in line as the binary runs it.
pub fn scraper_with_io(
    sysfs: &Path,
    extra_flags: &[&str],
    mut io: nvmeof_agent::bpf::io::IoState,
) -> Scraper {
    use nvmeof_agent::collector::{Named, Reads};
    use nvmeof_agent::collectors::io::IoCollector;
    let config = config(sysfs, extra_flags);
    let mut collectors = build_enabled(&config).expect("collectors build");
    // As the registry hands the flag to the tracer.
    io.per_queue = config.per_queue;
    collectors.push(Named {
        name: "io",
        collector: Box::new(IoCollector::from_state(io)),
        reads: Reads::Memory,
    });
    Scraper::new(collectors, config.collector_timeout).with_per_queue(config.per_queue)
}
