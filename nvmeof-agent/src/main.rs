//! nvmeof-exporter: parses flags, builds the enabled collectors from the registry, serves
//! `/metrics` until SIGINT or SIGTERM; SIGHUP re-reads the web config.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use nvmeof_agent::cli;
use nvmeof_agent::config::Config;
use nvmeof_agent::{collectors, http, scrape::Scraper};

/// See Cargo.toml: musl's malloc made a scrape cost more CPU than the glibc build's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's option setter (`mimalloc.h`), linked with the allocator; the `mimalloc` crate
// declares it only behind a feature that pulls in more than this one function.
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
/// `mi_option_arena_eager_commit`, `mi_option_purge_delay` and `mi_option_allow_thp` in
/// mimalloc 3's `mi_option_e`.
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
const MI_OPTION_ALLOW_THP: std::ffi::c_int = 43;

/// mimalloc's defaults keep what a burst of scrapes took: arenas committed eagerly and freed pages
/// purged only after a delay and only when the allocator runs again, so an idle agent stayed at
/// its peak (35 MiB at start, 64 MiB after 50 scrapes, 82 MiB after 50 concurrent ones, on the 6.1
/// tree; 8, 14 and 21 MiB with these two options, CPU per scrape unchanged: BENCHMARKS.md). Set
/// from the ELF initialisers, before the Rust runtime's first allocation reserves the first arena
/// (set in `main`, they came too late for the dynamically linked build).
///
/// Transparent huge pages are off for the process: where the kernel's setting is `always` (Debian's
/// and RHEL's kernels), a page the allocator touches in an arena is backed by 2 MiB, and purging a
/// freed 64 KiB page frees nothing. In the lab (6.1, `always`) the agent's anonymous memory grew
/// from 4.5 to 31 MiB over five scrapes 11 s apart, 16 MiB of it huge pages, where the same binary
/// on a host with `madvise` stayed at 2 MiB (BENCHMARKS.md, weight). The agent's heap is a few MiB
/// of short-lived scrape buffers: huge pages buy it nothing.
extern "C" fn allocator_options() {
    // SAFETY: plain setters of mimalloc's global options, before any other thread exists, and a
    // prctl on this process's own memory policy.
    unsafe {
        mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        mi_option_set(MI_OPTION_ALLOW_THP, 0);
        // mimalloc makes the same call when it reads the option at its initialisation, which may
        // come before this initialiser; a kernel without the prctl refuses it, and nothing changes.
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
#[used]
#[link_section = ".init_array"]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

fn main() -> ExitCode {
    // `nvmeof-exporter trace ...` and `top ...`: clients of a running agent, not agents.
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(a) if a == nvmeof_agent::client::trace::NAME => {
            return nvmeof_agent::client::trace::main(args)
        }
        Some(a) if a == nvmeof_agent::client::top::NAME => {
            return nvmeof_agent::client::top::main(args)
        }
        _ => {}
    }
    // Invalid flags exit here with code 2 and clap's message.
    let config = cli::parse();
    env_logger::Builder::new()
        .filter_level(config.log_level)
        .parse_default_env()
        .init();
    let open_files = raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
        .context("starting the async runtime")
    {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config, open_files));
    // A collector's blocking read that never returns (a sysfs attribute of a controller stuck in
    // recovery) would hold the runtime's drop, and the exit, forever: blocking threads get this
    // long, then are left to the process's end.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long a blocking thread (a collector's run) waits idle for the next one before it ends.
/// Tokio's default, 10 s, is shorter than a fleet's scrape interval (15 to 60 s), so every
/// scrape started each collector's thread again, with a fresh allocator heap whose pages it then
/// faulted in. Measured in the lab beside node_exporter (`cargo xtask bench-weight`,
/// BENCHMARKS.md): CPU per scrape at a 15 s cadence 110 ms with 10 s, 74 ms with this, back to
/// back 68 and 73.
/// An idle thread costs a stack mapping and a few resident pages.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(300);

/// After the server has stopped, blocking tasks (collector runs) get this long to finish.
const BLOCKING_GRACE: Duration = Duration::from_secs(1);

/// File descriptors kept for everything but connections: BPF maps and programs, sysfs reads,
/// the controllers' devices, netlink sockets.
const RESERVED_FDS: u64 = 256;

/// Raises the soft limit of open files to the hard one, as a busy node's many connections and
/// the agent's own files need, and logs it. Returns the soft limit in force.
fn raise_open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        log::warn!(
            "reading the open-file limit: {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    if lim.rlim_cur >= lim.rlim_max {
        return Some(lim.rlim_cur);
    }
    let before = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        log::warn!(
            "raising the open-file limit from {before} to {}: {}",
            lim.rlim_max,
            std::io::Error::last_os_error()
        );
        return Some(before);
    }
    log::info!("open-file limit raised from {before} to {}", lim.rlim_max);
    Some(lim.rlim_max)
}

/// `--web.max-connections`, lowered when the open-file limit would be reached first (accepting
/// would then fail with EMFILE, and so would the collectors' reads).
fn connection_limit(flag: usize, open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files.filter(|_| flag > 0) else {
        return flag;
    };
    let fits = open_files.saturating_sub(RESERVED_FDS).max(1);
    let fits = usize::try_from(fits).unwrap_or(usize::MAX);
    if flag > fits {
        log::warn!(
            "--web.max-connections={flag} does not fit the open-file limit of {open_files}: at most {fits} connections"
        );
        return fits;
    }
    flag
}

async fn run(config: Config, open_files: Option<u64>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Watched from the start: SIGHUP's default action ends the process.
    let hangup = signal(SignalKind::hangup()).context("watching SIGHUP")?;
    // Every collector, the eBPF `io` one included once it lands, is built from the registry:
    // see the TODO(merge) in `collectors::registry`.
    let built = collectors::build_enabled(&config)?;
    log::info!(
        "nvmeof-exporter {}: collectors {}; sysfs at {}",
        env!("CARGO_PKG_VERSION"),
        config.collectors.join(", "),
        config.sysfs.display()
    );
    let scraper = Scraper::new(built, config.collector_timeout).with_per_queue(config.per_queue);
    // A web config that does not load stops the start: serving in the clear or without auth
    // what was meant to be protected is worse than not serving.
    let web = match &config.web_config {
        Some(path) => Some(http::webconfig::WebConfig::load(path)?),
        None => None,
    };
    let (tls, auth, headers) = match web {
        Some(w) => (w.tls.map(Arc::new), w.auth, w.headers),
        None => (None, None, Default::default()),
    };
    let app = Arc::new(
        http::App::new(scraper, config.telemetry_path.clone())
            .with_auth(auth)
            .with_headers(headers)
            .with_native_only(config.native_only)
            .with_slow_log(
                (config.slow.is_on() && config.collectors.contains(&"io"))
                    .then(|| config.slow.log.clone()),
            )
            .with_max_requests(config.max_requests),
    );
    let limits = http::Limits {
        max_connections: connection_limit(config.max_connections, open_files),
        ..http::Limits::default()
    };
    let listener = http::bind(&config.listen).await?;
    log::info!(
        "listening on {} ({}; metrics at {}{})",
        listener.local_addr().context("reading the bound address")?,
        if tls.is_some() { "TLS" } else { "plain HTTP" },
        config.telemetry_path,
        if app.requires_auth() {
            ", basic auth"
        } else {
            ""
        }
    );
    tokio::spawn(reload_on_sighup(
        hangup,
        config.web_config.clone(),
        tls.clone(),
        app.clone(),
    ));
    match tls {
        Some(tls) => http::serve_with(listener, tls, app, limits, shutdown_signal()).await?,
        None => {
            let plain = Arc::new(http::PlainTcp);
            http::serve_with(listener, plain, app, limits, shutdown_signal()).await?
        }
    }
    log::info!("stopped");
    Ok(())
}

/// On each SIGHUP, re-reads and checks the web config and, when it loads, swaps it in whole for
/// the connections and requests that follow (certificates, client CA, users, headers); one that does not
/// load leaves the config in force and says why. TLS cannot be turned on or off this way: the
/// listener would change protocol under its clients.
async fn reload_on_sighup(
    mut hangup: tokio::signal::unix::Signal,
    path: Option<PathBuf>,
    tls: Option<Arc<http::webconfig::Tls>>,
    app: Arc<http::App>,
) {
    while hangup.recv().await.is_some() {
        let Some(path) = &path else {
            log::info!("SIGHUP: no --web.config.file, nothing to reload");
            continue;
        };
        let loaded = match http::webconfig::WebConfig::load(path) {
            Ok(l) => l,
            Err(e) => {
                log::error!("SIGHUP: keeping the web config in force: {e:#}");
                continue;
            }
        };
        let users = loaded.auth.as_ref().map_or(0, |a| a.users());
        match (&tls, loaded.tls) {
            (Some(current), Some(new)) => current.replace(new),
            (None, None) => {}
            _ => {
                log::error!(
                    "SIGHUP: keeping the web config in force: {} turns TLS {}, which takes a restart",
                    path.display(),
                    if tls.is_some() { "off" } else { "on" }
                );
                continue;
            }
        }
        app.set_auth(loaded.auth);
        app.set_headers(loaded.headers);
        log::info!(
            "SIGHUP: reloaded the web config {} ({}, basic auth for {users} users)",
            path.display(),
            if tls.is_some() { "TLS" } else { "plain HTTP" },
        );
    }
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot watch SIGTERM ({e}); stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT: shutting down"),
        _ = term.recv() => log::info!("SIGTERM: shutting down"),
    }
}
