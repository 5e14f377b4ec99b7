//! The `engine` binary: serves the demo command set (docs/protocol.md#demo-command-set) on the
//! configured listeners. Maps its command line onto `ooblane::Config`; logs with `RUST_LOG`.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use ooblane::{Address, Config, Limits, Replication, Server};

/// Thread-per-core QMP command dispatcher with an out-of-band lane.
///
/// Serves the demo command set: in-band `work`, `counter-add`, `stall`, `emit-event`,
/// `query-version`, `query-commands`, `query-qmp-schema`, `rpc.discover`, `quit`; allow-oob
/// `ping`, `query-counter`, `release`, `query-stats`, `query-cluster`. With --data or
/// --cluster, `counter-add` is replicated (logged, made durable, applied on every member);
/// the others run on this member only.
///
/// Examples:
///   engine                                   # QMP on tcp:127.0.0.1:4444
///   engine --qmp tcp:127.0.0.1:0 --qmp unix:/tmp/engine.sock --threads 2
///   engine --metrics tcp:127.0.0.1:9464         # Prometheus scrapes http://127.0.0.1:9464/metrics
///   RUST_LOG=ooblane=debug engine --no-pin
///   engine --data /var/lib/engine                # durable: counter-add survives kill -9
///   engine --cluster 1=tcp:127.0.0.1:7001,2=tcp:127.0.0.1:7002,3=tcp:127.0.0.1:7003 \
///          --node 2 --data /var/lib/engine-2 --qmp tcp:127.0.0.1:4402   # member 2 of 3
///
/// Exits 0 after SIGINT, SIGTERM or `quit`, once every request already read is answered.
/// A second signal exits at once.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// QMP listener, `tcp:HOST:PORT` or `unix:PATH` (repeatable; port 0 picks a free port).
    /// Default when no listener is given: tcp:127.0.0.1:4444.
    #[arg(long, value_name = "ADDR")]
    qmp: Vec<Address>,

    /// OVS-style JSON-RPC listener, `tcp:HOST:PORT` or `unix:PATH` (repeatable).
    #[arg(long, value_name = "ADDR")]
    jsonrpc: Vec<Address>,

    /// Parser threads. Default: with C usable cores, C-1 parser threads pinned to cores
    /// 0..C-2 and the executor pinned alone to the last core, so a saturated executor never
    /// shares a core with a parser thread; with one core, one parser thread and the executor,
    /// unpinned. With N given, the executor keeps a core of its own only if N < C. The layout
    /// is logged at start-up.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,

    /// Do not pin threads to cores.
    #[arg(long)]
    no_pin: bool,

    /// Nice value for the executor thread (0 leaves it unchanged). Positive values let parser
    /// threads that share its core preempt it at once, keeping OOB latency low while the
    /// executor is saturated.
    #[arg(long, value_name = "N", default_value_t = Config::default().executor_nice, allow_negative_numbers = true)]
    executor_nice: i32,

    /// Microseconds a thread with a core of its own polls for work before it sleeps: the
    /// executor for the next batch, a parser thread for the outcomes of its in-flight jobs.
    /// Only when the thread layout gives the executor a core of its own (never on shared
    /// cores). Spares a wake-up under a steady stream, burns CPU on that core; 0 never spins.
    #[arg(long, value_name = "US", default_value_t = Config::DEFAULT_SPIN.as_micros() as u64)]
    spin_us: u64,

    /// Largest accepted message, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_message_bytes)]
    max_message: usize,

    /// In-band requests per connection handed to the executor at once; later ones are
    /// parked in the connection while reading and OOB continue.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_inflight_per_conn)]
    max_inflight: usize,

    /// Bytes one connection may make the engine hold (parked requests, replies owed, unsent
    /// output, read buffer) beyond which the engine stops reading and handling its input.
    /// At least twice --max-message and 64 KiB.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().conn_budget_bytes)]
    conn_budget: usize,

    /// In-band jobs outstanding (handed to the executor, not yet answered) across all parser
    /// threads; beyond it jobs park in their connections while reading and OOB go on.
    #[arg(long, value_name = "N", default_value_t = Limits::default().queue_capacity)]
    queue: usize,

    /// Seconds graceful shutdown waits for clients to take their last replies.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    drain_timeout: u64,

    /// Serve Prometheus metrics (OpenMetrics text, `GET /metrics`) over HTTP on
    /// `tcp:HOST:PORT` (port 0 picks a free port). Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<Address>,

    /// Open connections past which a new one gets one error ("too many connections") and is
    /// closed. Default: derived from the descriptor limit (which the engine raises to its
    /// hard limit at start), leaving headroom for its own descriptors: 960 at 1024.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    max_connections: usize,

    /// Seconds a QMP client has to finish capabilities negotiation before it gets one error
    /// and is disconnected (0 disables). Negotiated sessions are never timed out when idle.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().negotiation_timeout.as_secs())]
    negotiation_timeout: u64,

    /// Seconds a message may stay incomplete (from its first byte) before the connection
    /// gets one error and is disconnected (0 disables). Idle connections are never timed out.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().incomplete_timeout.as_secs())]
    incomplete_timeout: u64,

    /// Bytes all connections together may make the engine hold; past it, the connections
    /// holding more than their fair share stop being read until memory drains. Default:
    /// a quarter of the machine's memory, at most 4 GiB.
    #[arg(long, value_name = "BYTES", default_value_t = 0, hide_default_value = true)]
    memory_limit: usize,

    /// Keep a durable log of every replicated in-band command (`counter-add`) in DIR: each
    /// is on disk (fsync, grouped across commands) before its reply leaves, and a restart
    /// rebuilds the state from the latest snapshot plus the log after it. Required with
    /// --cluster (each member has its own DIR).
    #[arg(long, value_name = "DIR")]
    data: Option<std::path::PathBuf>,

    /// Run as a member of this static Raft cluster: `ID=tcp:HOST:PORT,...` (3 or 5
    /// members), every member's id and member-to-member address, the same on every member.
    /// Replicated commands received by any member execute on all of them in one order; a
    /// follower forwards them to the leader. OOB commands answer locally at once.
    #[arg(long, value_name = "MEMBERS", value_parser = parse_members, requires_all = ["node", "data"])]
    cluster: Option<BTreeMap<u64, SocketAddr>>,

    /// This member's id in --cluster.
    #[arg(long, value_name = "ID", requires = "cluster")]
    node: Option<u64>,

    /// With --data: take a snapshot (and drop the log before it) every N log entries.
    #[arg(long, value_name = "N", default_value_t = Replication::DEFAULT_SNAPSHOT_EVERY)]
    snapshot_every: u64,
}

/// `1=tcp:127.0.0.1:7001,2=tcp:127.0.0.1:7002,...`
fn parse_members(text: &str) -> Result<BTreeMap<u64, SocketAddr>, String> {
    let mut members = BTreeMap::new();
    for item in text.split(',') {
        let (id, address) =
            item.split_once('=').ok_or_else(|| format!("'{item}': expected ID=tcp:HOST:PORT"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("'{id}': a member id is a number"))?;
        let Address::Tcp(addr) = address.trim().parse::<Address>().map_err(|e| e.to_string())?
        else {
            return Err(format!("'{address}': members talk over tcp:HOST:PORT"));
        };
        if members.insert(id, addr).is_some() {
            return Err(format!("member {id} is listed twice"));
        }
    }
    Ok(members)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "ooblane=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = Config {
        qmp: cli.qmp,
        jsonrpc: cli.jsonrpc,
        threads: cli.threads,
        pin: !cli.no_pin,
        executor_nice: cli.executor_nice,
        spin: Duration::from_micros(cli.spin_us),
        limits: Limits {
            max_message_bytes: cli.max_message,
            max_inflight_per_conn: cli.max_inflight,
            conn_budget_bytes: cli.conn_budget,
            queue_capacity: cli.queue,
            drain_timeout: Duration::from_secs(cli.drain_timeout),
            max_connections: cli.max_connections,
            negotiation_timeout: Duration::from_secs(cli.negotiation_timeout),
            incomplete_timeout: Duration::from_secs(cli.incomplete_timeout),
            memory_limit_bytes: cli.memory_limit,
        },
        metrics: cli.metrics,
        replication: cli.data.map(|data| Replication {
            members: cli.cluster.unwrap_or_default(),
            node: cli.node.unwrap_or(1),
            snapshot_every: cli.snapshot_every,
            ..Replication::durable(data)
        }),
        ..Config::default()
    };
    let server = Server::start(config, ooblane::demo::registry()).context("cannot start")?;
    memory_return::start();
    let mut stdout = std::io::stdout().lock();
    for addr in server.qmp_addrs() {
        writeln!(stdout, "QMP listening on {addr}")?;
    }
    for addr in server.jsonrpc_addrs() {
        writeln!(stdout, "JSON-RPC listening on {addr}")?;
    }
    if let Some(addr) = server.metrics_addr() {
        writeln!(stdout, "metrics listening on tcp:{addr}")?;
    }
    stdout.flush()?;
    drop(stdout);

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
    Ok(())
}

/// Gives freed memory back to the system. glibc's malloc keeps what the engine frees: after
/// 500 connections pipelining behind a `stall` closed, 817 MiB stayed resident (an idle
/// engine: 7 MiB). Once a second a thread compares the resident set with what malloc has in
/// use; when the process holds more than `SPARE` of freed memory, and `SPARE` more than
/// after the last trim, it calls `malloc_trim(0)`, which returns every free page of every
/// arena; that brought the same run back to 11 MiB within 2 s. Measured against jemalloc
/// (36 MiB: its metadata stays), mimalloc and tcmalloc (neither gave anything back) in
/// results/2026-12-01-hardening.
///
/// The binary's own choice: the library sets no allocator and trims nothing, so an
/// embedding program keeps its own policy (docs/operations.md#memory).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod memory_return {
    use std::time::Duration;

    /// Freed memory the process may keep resident (reused at once under load) before a trim.
    const SPARE: usize = 32 << 20;
    /// How often the resident set is compared with malloc's count.
    const EVERY: Duration = Duration::from_secs(1);

    pub(super) fn start() {
        let spawned = std::thread::Builder::new().name("engine-trim".into()).spawn(run);
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the memory-return thread");
        }
    }

    fn run() {
        let page = rustix::param::page_size();
        // Freed memory still resident after the last trim: what fragmentation keeps (pages
        // with a live allocation on them), which another trim would not give back.
        let mut kept = 0;
        loop {
            std::thread::sleep(EVERY);
            let Some(before) = resident(page) else { return };
            let spare = before.saturating_sub(in_use());
            kept = kept.min(spare);
            if spare <= SPARE || spare <= kept + SPARE {
                continue;
            }
            trim();
            let after = resident(page).unwrap_or(before);
            kept = after.saturating_sub(in_use());
            tracing::debug!(before, after, "malloc_trim");
        }
    }

    /// The resident set, from `/proc/self/statm`.
    fn resident(page: usize) -> Option<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * page)
    }

    /// Bytes malloc has handed out and not had back (arenas and its own mmaps).
    #[allow(unsafe_code)]
    fn in_use() -> usize {
        // SAFETY: mallinfo2 takes no arguments and only reads malloc's own statistics
        // (under the arenas' locks); it is thread-safe and has no preconditions.
        let info = unsafe { libc::mallinfo2() };
        info.uordblks + info.hblkhd
    }

    #[allow(unsafe_code)]
    fn trim() {
        // SAFETY: malloc_trim takes the arenas' locks itself and only returns free pages to
        // the system; it is thread-safe and has no preconditions.
        unsafe { libc::malloc_trim(0) };
    }
}

/// Other targets keep their allocator's own policy.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod memory_return {
    pub(super) fn start() {}
}
