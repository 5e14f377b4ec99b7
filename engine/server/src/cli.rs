//! The command line: flags, their help, and how they map onto the server's configuration
//! ([`ooblane::Config`]) and, with `--data` / `--cluster`, the replicated log's
//! ([`RaftConfig`]). Parsed once at start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ooblane::{Address, Config, Limits};
use ooblane_raft::RaftConfig;

/// Thread-per-core QMP command dispatcher with an out-of-band lane.
///
/// Serves the demo command set: in-band `work`, `counter-add`, `stall`, `emit-event`,
/// `query-version`, `query-commands`, `query-qmp-schema`, `rpc.discover`,
/// `cluster-remove-member`, `quit`; allow-oob `ping`, `query-counter`, `release`,
/// `query-stats`, `query-cluster`. With --data or --cluster, `counter-add` is replicated
/// (logged, made durable, applied on every member), `query-counter` sent in-band is a
/// linearizable read; the others run on this member only.
///
/// Examples:
///   ooblane                                   # QMP on tcp:127.0.0.1:4444
///   ooblane --qmp tcp:127.0.0.1:0 --qmp unix:/tmp/ooblane.sock --threads 2
///   ooblane --metrics tcp:127.0.0.1:9464       # Prometheus scrapes http://127.0.0.1:9464/metrics
///   RUST_LOG=ooblane=debug ooblane --no-pin
///   ooblane --data /var/lib/ooblane             # durable: counter-add survives kill -9
///   ooblane --cluster 1=tcp:127.0.0.1:7001,2=tcp:127.0.0.1:7002,3=tcp:127.0.0.1:7003 \
///           --node 2 --data /var/lib/ooblane-2 --qmp tcp:127.0.0.1:4402   # member 2 of 3
///   ooblane --cluster 1=tcp:127.0.0.1:7001,2=tcp:127.0.0.1:7002,3=tcp:127.0.0.1:7003,4=tcp:127.0.0.1:7004 \
///           --node 4 --join --data /var/lib/ooblane-4 --qmp tcp:127.0.0.1:4404    # a 4th joins
///
/// Exits 0 after SIGINT, SIGTERM or `quit`, once every request already read is answered.
/// A second signal exits at once.
#[derive(Debug, Parser)]
#[command(name = "ooblane", version, verbatim_doc_comment)]
pub struct Cli {
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

    /// Microseconds the executor, with a core of its own, may poll for the next batch before
    /// it parks (stopped by the idle policy where it does not pay). Only when the thread
    /// layout gives the executor a core of its own. Spares a wake-up under a steady stream,
    /// burns CPU on that core; 0 never polls.
    #[arg(long, value_name = "US", default_value_t = Config::DEFAULT_SPIN.as_micros() as u64)]
    spin_us: u64,

    /// Microseconds a parser thread may poll for the outcomes of the jobs it just handed
    /// over before it sleeps (stopped by the idle policy where it does not pay, e.g. on a
    /// core shared with a client). Same layout condition as --spin-us; 0 never polls.
    #[arg(long, value_name = "US", default_value_t = Config::DEFAULT_AWAIT_OUTCOMES.as_micros() as u64)]
    await_outcomes_us: u64,

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

    /// Run as a member of this Raft cluster: `ID=tcp:HOST:PORT,...`, every member's id and
    /// member-to-member address (1, 3, 5 or 7 members to form a cluster; with --join, the
    /// running members and this one). Replicated commands received by any member execute on
    /// all of them in one order; a follower forwards them to the leader. In-band reads
    /// (`query-counter` with execute) are linearizable on every member; OOB commands answer
    /// locally at once. Members join and leave at run time (--join, `cluster-remove-member`):
    /// the membership lives in the log, so this list only matters the first time.
    #[arg(long, value_name = "MEMBERS", value_parser = parse_members, requires_all = ["node", "data"])]
    cluster: Option<BTreeMap<u64, SocketAddr>>,

    /// This member's id in --cluster.
    #[arg(long, value_name = "ID", requires = "cluster")]
    node: Option<u64>,

    /// Join a running cluster instead of forming one: --cluster lists its members and this
    /// one (e.g. 1=tcp:H:P1,2=tcp:H:P2,3=tcp:H:P3,4=tcp:H:P4 with --node 4). This member asks
    /// them to add it, catches up (log or snapshot) as a non-voting learner, then votes;
    /// `query-cluster` shows its progress. Once joined, its --data holds the membership and a
    /// restart (with or without --join) resumes as a member. To replace a dead member: remove
    /// it (`cluster-remove-member`), then join a new one with a new id.
    #[arg(long, requires_all = ["cluster", "node"])]
    join: bool,

    /// With --data: take a snapshot (and drop the log before it) every N log entries.
    #[arg(long, value_name = "N", default_value_t = RaftConfig::DEFAULT_SNAPSHOT_EVERY)]
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

impl Cli {
    /// The server's configuration.
    pub fn config(&self) -> Config {
        Config {
            qmp: self.qmp.clone(),
            jsonrpc: self.jsonrpc.clone(),
            threads: self.threads,
            pin: !self.no_pin,
            executor_nice: self.executor_nice,
            spin: Duration::from_micros(self.spin_us),
            await_outcomes: Duration::from_micros(self.await_outcomes_us),
            limits: Limits {
                max_message_bytes: self.max_message,
                max_inflight_per_conn: self.max_inflight,
                conn_budget_bytes: self.conn_budget,
                queue_capacity: self.queue,
                drain_timeout: Duration::from_secs(self.drain_timeout),
                max_connections: self.max_connections,
                negotiation_timeout: Duration::from_secs(self.negotiation_timeout),
                incomplete_timeout: Duration::from_secs(self.incomplete_timeout),
                memory_limit_bytes: self.memory_limit,
            },
            ..Config::default()
        }
    }

    /// The replicated log's configuration, with `--data`.
    pub fn raft(&self) -> Option<RaftConfig> {
        self.data.as_ref().map(|data| RaftConfig {
            members: self.cluster.clone().unwrap_or_default(),
            node: self.node.unwrap_or(1),
            snapshot_every: self.snapshot_every,
            join: self.join,
            ..RaftConfig::durable(data)
        })
    }

    /// Where to serve Prometheus metrics, with `--metrics`.
    pub fn metrics(&self) -> Option<&Address> {
        self.metrics.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_with_reasons_for_mistakes() {
        let members = parse_members("1=tcp:127.0.0.1:7001,2=tcp:127.0.0.1:7002").unwrap();
        assert_eq!(members[&2], "127.0.0.1:7002".parse().unwrap());
        assert!(
            parse_members("1=tcp:127.0.0.1:1,1=tcp:127.0.0.1:2").unwrap_err().contains("twice")
        );
        assert!(parse_members("x=tcp:127.0.0.1:1").unwrap_err().contains("a number"));
        assert!(parse_members("1=unix:/x").unwrap_err().contains("tcp:HOST:PORT"));
        assert!(parse_members("1").unwrap_err().contains("expected ID="));
    }
}
