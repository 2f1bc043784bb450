//! nvmeof-exporter: parses flags, builds the enabled collectors from the registry, serves
//! `/metrics` until SIGINT or SIGTERM.
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use nvmeof_agent::cli;
use nvmeof_agent::config::Config;
use nvmeof_agent::{collectors, http, scrape::Scraper};

/// See Cargo.toml: musl's malloc made a scrape cost more CPU than the glibc build's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Invalid flags exit here with code 2 and clap's message.
    let config = cli::parse();
    env_logger::Builder::new()
        .filter_level(config.log_level)
        .parse_default_env()
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
    {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Every collector, the eBPF `io` one included once it lands, is built from the registry:
    // see the TODO(merge) in `collectors::registry`.
    let built = collectors::build_enabled(&config)?;
    log::info!(
        "nvmeof-exporter {}: collectors {}; sysfs at {}",
        env!("CARGO_PKG_VERSION"),
        config.collectors.join(", "),
        config.sysfs.display()
    );
    let scraper = Scraper::new(built, config.collector_timeout);
    // A web config that does not load stops the start: serving in the clear or without auth
    // what was meant to be protected is worse than not serving.
    let web = match &config.web_config {
        Some(path) => Some(http::webconfig::WebConfig::load(path)?),
        None => None,
    };
    let (tls, auth) = match web {
        Some(w) => (w.tls, w.auth),
        None => (None, None),
    };
    let app = Arc::new(
        http::App::new(scraper, config.telemetry_path.clone())
            .with_auth(auth)
            .with_native_only(config.native_only),
    );
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
    match tls {
        Some(tls) => http::serve(listener, Arc::new(tls), app, shutdown_signal()).await?,
        None => http::serve(listener, Arc::new(http::PlainTcp), app, shutdown_signal()).await?,
    }
    log::info!("stopped");
    Ok(())
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
