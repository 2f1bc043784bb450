//! What the exporter itself adds to a scrape, natively: `scrape_bench SYSFS_ROOT SCRAPES` builds
//! the sysfs collectors as the binary does (no eBPF, no admin commands: those read the running
//! kernel and devices, not the tree) over a captured sysfs tree and times each scrape from the
//! start of collection to the encoded page, the span `nvmeof_exporter_scrape_duration_seconds`
//! measures. Prints the distribution and the process CPU time per scrape (every collector
//! thread included). BENCHMARKS.md has the command and a run.
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nvmeof_agent::cli::parse_from;
use nvmeof_agent::collectors::build_enabled;
use nvmeof_agent::scrape::Scraper;

/// User plus system CPU time of the whole process.
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills a plain struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (root, n) = match args.as_slice() {
        [_, root, n] => (root.clone(), n.parse::<usize>().context("SCRAPES")?),
        _ => anyhow::bail!("usage: scrape_bench SYSFS_ROOT SCRAPES"),
    };
    let config = parse_from([
        "nvmeof-exporter".to_owned(),
        format!("--path.sysfs={root}"),
        "--no-collector.io".to_owned(),
        "--no-collector.smart".to_owned(),
        // Generous: this measures the work, not the deadline.
        "--collector.timeout=10s".to_owned(),
    ])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let scraper = Scraper::new(build_enabled(&config)?, config.collector_timeout);
    let once = || {
        rt.block_on(async {
            let families = scraper.scrape().await;
            nvmeof_agent::exposition::text::encode(&families).len()
        })
    };
    // The first scrape warms the page cache and the collectors' state.
    let bytes = once();
    let cpu0 = process_cpu();
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        once();
        took.push(t.elapsed());
    }
    let cpu = process_cpu() - cpu0;
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let q = |f: f64| took[((took.len() - 1) as f64 * f) as usize];
    let mean = took.iter().sum::<Duration>() / n as u32;
    println!(
        "scrape_bench: {n} scrapes of {root} ({bytes} bytes of text): mean {:.2} ms, p50 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms; CPU {:.2} ms per scrape",
        ms(mean),
        ms(q(0.5)),
        ms(q(0.99)),
        ms(took[took.len() - 1]),
        ms(cpu / n as u32)
    );
    Ok(())
}
