//! The `ooblane` binary: serves the demo command set (docs/protocol.md#demo-command-set) on
//! the configured listeners, with `--data` / `--cluster` through the replicated log, with
//! `--metrics` a Prometheus endpoint. Logs with `RUST_LOG` (colours only on a terminal).

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::Parser;
use ooblane::{Server, ServerHandle};
use ooblane_raft::RaftLog;
use ooblane_server::cli::Cli;
use ooblane_server::metrics::MetricsEndpoint;

fn main() -> anyhow::Result<()> {
    let stderr = std::io::stderr();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "ooblane=info,ooblane_raft=info".into()),
        )
        .with_ansi(stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let registry = ooblane::demo::registry();
    let server = match cli.raft() {
        Some(raft) => Server::start_replicated(cli.config(), registry, RaftLog::new(raft)),
        None => Server::start(cli.config(), registry),
    }
    .context("cannot start")?;
    let metrics = cli.metrics().map(|a| MetricsEndpoint::start(a, server.stats_source()));
    let metrics = metrics.transpose().context("cannot start the metrics endpoint")?;
    ooblane_server::trim::start();
    announce(&server, metrics.as_ref())?;
    let trigger = server.trigger();
    let signals = std::sync::atomic::AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        if signals.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
            std::process::exit(130);
        }
        trigger.shutdown("host-signal");
    })
    .context("cannot install the signal handler")?;
    server.wait();
    drop(metrics);
    Ok(())
}

/// Prints where the server listens, one line each, on stdout (scripts read them).
fn announce(server: &ServerHandle, metrics: Option<&MetricsEndpoint>) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    for addr in server.qmp_addrs() {
        writeln!(stdout, "QMP listening on {addr}")?;
    }
    for addr in server.jsonrpc_addrs() {
        writeln!(stdout, "JSON-RPC listening on {addr}")?;
    }
    if let Some(metrics) = metrics {
        writeln!(stdout, "metrics listening on tcp:{}", metrics.addr())?;
    }
    stdout.flush()
}
