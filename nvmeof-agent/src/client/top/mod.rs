//! `nvmeof-exporter top`: a live view of one node's controllers and hardware queues, from the
//! running agent. It scrapes `/metrics?controller=all` (every controller per queue, for this
//! scrape only) every `--interval` and shows what moved between two scrapes: IOPS, MB/s, p50,
//! p99 and max latency from the histogram buckets' deltas, commands in flight, utilisation
//! (busy time), and per controller its state, transport, errors and reconnects. `--once`
//! prints one interval as plain text for scripts.
//!
//! Where no agent runs (its loopback address refuses connections), `top` loads the programs
//! and the collectors it reads in its own process (alone.rs) and reads them the same way.
//!
//! parse.rs reads the text format, model.rs turns two scrapes into rows, render.rs lays them
//! out, tui.rs runs the terminal.
mod alone;
mod model;
mod parse;
mod render;
mod tui;

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser as _;
use hyper::StatusCode;

use crate::config::parse_duration;

pub use model::SortKey;

/// The subcommand's name: `nvmeof-exporter top ...`.
pub const NAME: &str = "top";

/// What `top` asks the agent for: every controller's queues, in the text format (the agent
/// answers text to a request without an `Accept` header).
const PATH: &str = "/metrics?controller=all";

// The flags, parsed by clap's derive: each field is typed where it is declared.
#[derive(Debug, clap::Parser)]
#[command(
    name = "nvmeof-exporter top",
    no_binary_name = true,
    about = "A live view of this node's NVMe-oF controllers and queues, from the running nvmeof-exporter.",
    after_help = "Per controller: state (red when not live), transport, errors (nvmeof_io_errors_total) and \
reconnects (nvmeof_reconnect_attempts_total; '-' where the agent polls sysfs) since the agent \
started, red when they grew in the last interval. Per controller and queue: IOPS, MB/s (10^6 \
bytes), p50 and p99 latency (interpolated in the agent's classic buckets, powers of two of a \
second, as histogram_quantile does), MAX (the upper bound of the highest bucket a command fell \
in: the agent exposes no maximum), INFL (commands in flight), UTL% (time with a command in \
flight). A controller's figures are its I/O queues' together (admin commands left out), its \
UTL% their mean.\n\n\
Keys: s or Tab: next sort column; S or Shift-Tab: previous; r: reverse; q, Esc or Ctrl-C: quit."
)]
struct Options {
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = crate::client::DEFAULT_AGENT,
        help = "The agent's --web.listen-address (plain HTTP). Where this loopback address refuses connections (no agent on this node), top loads the eBPF programs itself (root, or CAP_BPF and CAP_PERFMON)."
    )]
    agent: String,
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1s",
        value_parser = parse_duration,
        help = "Time between two scrapes: the figures are per second over it."
    )]
    interval: Duration,
    #[arg(
        long,
        value_name = "COLUMN",
        default_value = "iops",
        value_parser = SortKey::parse,
        help = "Sort by iops, mbps, p50, p99, max, inflight, util, errors (largest first) or name."
    )]
    sort: SortKey,
    #[arg(long, help = "Reverse the order.")]
    reverse: bool,
    #[arg(
        long,
        help = "Print one interval as a plain table and exit (no colours, no escape codes)."
    )]
    once: bool,
}

/// Runs `nvmeof-exporter top ARGS` (`args` after the program name and `top`).
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    let o = Options::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let result = match o.once {
        true => once(&o),
        false => tui::run(&o),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nvmeof-exporter top: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One scrape: when it was asked for (the agent drains its maps as it answers, so the request's
/// start is when the counts were taken, within the agent's answer time) and what it held.
struct Scrape {
    at: Instant,
    snapshot: model::Snapshot,
    /// Lines of the families `top` reads that did not parse: said, not hidden.
    skipped: usize,
}

/// Scrapes and parses: the agent within the client's deadline (`interval`, but at least 5 s),
/// or, where none runs, the collectors in this process.
struct Client {
    runtime: tokio::runtime::Runtime,
    agent: String,
    timeout: Duration,
    alone: Option<alone::Alone>,
}

impl Client {
    /// The client and its first scrape: from the agent at `--agent`, or, when that is a
    /// loopback address that refuses connections (no agent on this node), from the programs
    /// and collectors loaded here.
    fn connect(o: &Options) -> anyhow::Result<(Client, Scrape)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let mut client = Client {
            runtime,
            agent: o.agent.clone(),
            timeout: o.interval.max(Duration::from_secs(5)),
            alone: None,
        };
        let refused = match client.scrape() {
            Ok(first) => return Ok((client, first)),
            Err(e) if alone::no_local_agent(&o.agent, &e) => e,
            Err(e) => return Err(e),
        };
        let alone = alone::Alone::start(&client.runtime)
            .with_context(|| format!("{refused:#}; and without it"))?;
        client.alone = Some(alone);
        let first = client.scrape()?;
        // After the first scrape: what runs from here on is counted.
        eprintln!(
            "nvmeof-exporter top: no agent at {}: the eBPF programs are loaded in this process",
            o.agent
        );
        Ok((client, first))
    }

    /// Where the figures come from, for the title.
    fn source(&self) -> String {
        match self.alone {
            Some(_) => format!("in-process (no agent at {})", self.agent),
            None => format!("agent {}", self.agent),
        }
    }

    fn scrape(&self) -> anyhow::Result<Scrape> {
        let at = Instant::now();
        let body = match &self.alone {
            Some(alone) => alone.text(&self.runtime).into_bytes().into(),
            None => self.agent_text()?,
        };
        let text = std::str::from_utf8(&body).context("the agent's /metrics is not UTF-8")?;
        let (samples, skipped) = parse::parse(text, model::wanted);
        Ok(Scrape {
            at,
            snapshot: model::Snapshot::from_samples(&samples),
            skipped,
        })
    }

    fn agent_text(&self) -> anyhow::Result<hyper::body::Bytes> {
        let (status, body) = self
            .runtime
            .block_on(super::get(&self.agent, PATH, self.timeout))
            .with_context(|| {
                format!(
                    "no agent answers at {} (top shows what a running nvmeof-exporter serves; \
                     --agent HOST:PORT names its --web.listen-address)",
                    self.agent
                )
            })?;
        if status != StatusCode::OK {
            bail!(
                "{}{PATH}: {status}: {}",
                self.agent,
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(body)
    }
}

/// The rows of the interval between two scrapes, sorted.
fn rows(
    before: &Scrape,
    after: &Scrape,
    sort: SortKey,
    reverse: bool,
) -> (Vec<model::ControllerRow>, f64) {
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let mut rows = model::rates(&before.snapshot, &after.snapshot, seconds);
    model::sort(&mut rows, sort, reverse);
    (rows, seconds)
}

/// `--once`: two scrapes `--interval` apart, one table.
fn once(o: &Options) -> anyhow::Result<()> {
    let (client, first) = Client::connect(o)?;
    std::thread::sleep(o.interval.saturating_sub(first.at.elapsed()));
    let second = client.scrape()?;
    let (rows, seconds) = rows(&first, &second, o.sort, o.reverse);
    if second.skipped > 0 {
        eprintln!(
            "nvmeof-exporter top: {} malformed lines of {}{PATH} skipped",
            second.skipped, o.agent
        );
    }
    print!("{}", once_text(&client.source(), seconds, o, &rows));
    Ok(())
}

/// The `--once` output: a comment line saying what was measured, then the table.
fn once_text(source: &str, seconds: f64, o: &Options, rows: &[model::ControllerRow]) -> String {
    format!(
        "# nvmeof-exporter top: {source}, interval {seconds:.3} s, sort {}{}\n{}",
        o.sort.name(),
        if o.reverse { " reversed" } else { "" },
        render::text(rows)
    )
}

#[cfg(test)]
mod tests;
