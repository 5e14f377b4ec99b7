//! `RunConfig`: everything one run needs, as plain data with `Default`.
//!
//! The binary maps its CLI onto this; tests and embedders build it with struct update
//! syntax. [`RunConfig::validate`] is called once by `run`; nothing here is consulted on the
//! send path except through the plan built from it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Address;
use crate::Error;
use crate::workload::{Lane, check_lanes, default_lanes};

/// Default total rate for share lanes: comfortable for the engine and loadgen together on a
/// 2-core machine, high enough that percentiles up to p99.99 have samples in 10 s.
pub const DEFAULT_RATE: f64 = 5000.0;

/// Default connections: enough to exercise several parser threads and the in-band total
/// order across sessions, few enough that each gets a meaningful per-connection rate.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// Which wire dialect the remotes speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// QMP (QEMU's monitor, the engine's QMP listeners).
    Qmp,
    /// JSON-RPC 1.0 as OVS speaks it (ovsdb-server, the engine's JSON-RPC listeners).
    JsonRpc,
    /// Raw echo: every request comes back byte for byte (the loopback ceiling).
    Echo,
    /// etcd's HTTP/JSON gateway (grpc-gateway): each lane's `cmd` is a path such as
    /// `/v3/kv/put` and its `args` the JSON body, sent as `POST` on a keep-alive HTTP/1.1
    /// connection. HTTP replies carry no id: each answers the oldest request outstanding on
    /// its connection.
    Etcd,
}

impl Protocol {
    /// Whether the dialect promises in-band replies in request order per connection: QMP
    /// does (qmp-spec: in-band commands are executed and answered in order); JSON-RPC does
    /// not (`ovsdb-server` answers a `transact` after its commit and a `list_dbs` at once);
    /// the echo server returns the bytes it read, in order. HTTP/1.1 answers in order too,
    /// but its replies carry no id, so they are matched by position and their order cannot
    /// be checked ([`RunConfig::order_check`]).
    pub fn promises_order(self) -> bool {
        match self {
            Protocol::Qmp | Protocol::Echo | Protocol::Etcd => true,
            Protocol::JsonRpc => false,
        }
    }

    /// Whether replies carry the request's id; otherwise each reply answers the oldest
    /// request outstanding on its connection.
    pub fn replies_carry_ids(self) -> bool {
        self != Protocol::Etcd
    }

    /// The name used on the command line and in `summary.json`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Qmp => "qmp",
            Protocol::JsonRpc => "jsonrpc",
            Protocol::Echo => "echo",
            Protocol::Etcd => "etcd",
        }
    }
}

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Constant-rate schedules; latency measured from the intended send time.
    Open,
    /// `depth` requests outstanding per connection, as fast as replies come (peak throughput).
    Closed {
        /// Requests kept in flight per connection.
        depth: usize,
    },
}

/// Whether the driver spins through the last stretch before a send is due.
///
/// The driver arms its timer early by the learned wake-up latency and spins the rest, which
/// keeps send lag in the µs; the spin takes a core, which the server needs when it shares a
/// small machine with loadgen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spin {
    /// Off when the server is local (embedded, loopback or Unix remote) and the machine has
    /// at most [`AUTO_SPIN_MAX_CORES`] cores; on otherwise.
    #[default]
    Auto,
    /// Always spin.
    On,
    /// Never spin: sleep in `epoll_wait` until the timer fires.
    Off,
}

/// Cores up to which `--spin auto` turns the spin off for a local server: with loadgen's
/// driver, the engine's parser threads and its executor, four cores or fewer leave none to
/// give to a spinning client.
pub const AUTO_SPIN_MAX_CORES: usize = 4;

/// OVS-style reconnect backoff (`lib/reconnect.c`): after one free try per remote, wait
/// `min`, doubling up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Backoff {
    /// First non-zero backoff (OVS default 1 s).
    pub min: Duration,
    /// Cap (OVS default 8 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { min: Duration::from_secs(1), max: Duration::from_secs(8) }
    }
}

/// One run's configuration.
#[derive(Clone, Debug, Serialize)]
pub struct RunConfig {
    /// Servers to load; empty means "start an embedded engine" (`run` fills it in).
    #[serde(serialize_with = "display_all")]
    pub remotes: Vec<Address>,
    /// Wire dialect of every remote.
    pub protocol: Protocol,
    /// What to send.
    pub lanes: Vec<Lane>,
    /// Total rate in requests/s shared by lanes without a fixed rate (open loop).
    pub rate: f64,
    /// Client connections, spread over `threads` driver threads.
    pub connections: usize,
    /// Driver threads (each runs its own event loop over a slice of the connections).
    pub threads: usize,
    /// Traffic sent but not recorded, before the measured window.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
    /// How long to wait for outstanding replies after the last send; what is still missing
    /// then is reported as missing.
    pub drain: Duration,
    /// Open or closed loop.
    pub mode: Mode,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Give up on one connect attempt after this long.
    pub connect_timeout: Duration,
    /// Shuffle the remote list per connection (OVS does, to spread clients); when false every
    /// connection tries the remotes in the order given.
    pub shuffle_remotes: bool,
    /// Seed for the per-connection remote shuffle; `None` draws one.
    pub seed: Option<u64>,
    /// Error replies, failed or missing requests do not make the run fail.
    pub expect_errors: bool,
    /// Check per-connection in-band reply order: `None` follows the protocol's promise
    /// ([`Protocol::promises_order`]); `Some` overrides it. Ids are always matched.
    pub verify_order: Option<bool>,
    /// Server processes to sample from `/proc` during the measured window (CPU per reply,
    /// context switches, RSS, fds), summed: one server, or every member of a cluster. With
    /// no remotes the embedded engine's threads are sampled whatever this says.
    pub server_pids: Vec<u32>,
    /// Early-wake spin of the driver threads.
    pub spin: Spin,
    /// Wall-clock time zero of the schedules (`--start-at`), so that several processes on
    /// one or several machines run aligned schedules and interval logs; `None` starts as
    /// soon as every connection is up.
    #[serde(skip)]
    pub start_at: Option<std::time::SystemTime>,
    /// Period of the interval log.
    pub interval: Duration,
    /// Free-form label for the results directory and reports.
    pub label: String,
}

/// Parses a `--start-at` time: RFC 3339 (`2026-01-02T03:04:05.5Z`) or unix seconds
/// (`1767323045.5`).
pub fn parse_start_at(text: &str) -> Result<std::time::SystemTime, Error> {
    if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    humantime::parse_rfc3339_weak(text).map_err(|e| {
        Error::Config(format!("--start-at {text}: not RFC 3339 or unix seconds ({e})"))
    })
}

fn display_all<S: serde::Serializer>(remotes: &[Address], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(remotes.iter().map(ToString::to_string))
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            remotes: Vec::new(),
            protocol: Protocol::Qmp,
            lanes: default_lanes(),
            rate: DEFAULT_RATE,
            connections: DEFAULT_CONNECTIONS,
            threads: 1,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(2),
            mode: Mode::Open,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(2),
            shuffle_remotes: true,
            seed: None,
            expect_errors: false,
            verify_order: None,
            server_pids: Vec::new(),
            spin: Spin::Auto,
            start_at: None,
            interval: Duration::from_secs(1),
            label: String::from("run"),
        }
    }
}

impl RunConfig {
    /// Whether this run checks in-band reply order, and why.
    pub fn order_check(&self) -> (bool, &'static str) {
        if !self.protocol.replies_carry_ids() {
            return (false, "replies carry no id: each answers the oldest outstanding request");
        }
        match self.verify_order {
            Some(true) => (true, "--verify-order"),
            Some(false) => (false, "--no-verify-order"),
            None if self.protocol.promises_order() => (true, "the protocol promises it"),
            None => (false, "the protocol promises no reply order"),
        }
    }

    /// Whether the drivers spin, and why, for a server at `remotes` (empty: embedded) on a
    /// machine with `cores` cores.
    pub fn spin_decision(&self, cores: usize) -> (bool, String) {
        let local = self.remotes.iter().all(|r| match r {
            Address::Unix(_) => true,
            Address::Tcp(addr) => addr.ip().is_loopback(),
        });
        match self.spin {
            Spin::On => (true, "--spin on".into()),
            Spin::Off => (false, "--spin off".into()),
            Spin::Auto if local && cores <= AUTO_SPIN_MAX_CORES => {
                (false, format!("auto: local server, {cores} cores <= {AUTO_SPIN_MAX_CORES}"))
            }
            Spin::Auto if local => {
                (true, format!("auto: local server, {cores} cores > {AUTO_SPIN_MAX_CORES}"))
            }
            Spin::Auto => (true, "auto: remote server".into()),
        }
    }

    /// Checks the configuration once, before anything connects.
    pub fn validate(&self) -> Result<(), Error> {
        check_lanes(&self.lanes)?;
        let fail = |why: &str| Err(Error::Config(why.into()));
        if self.connections == 0 {
            return fail("--connections must be at least 1");
        }
        if self.threads == 0 || self.threads > self.connections {
            return fail("--threads must be between 1 and --connections");
        }
        if self.duration.is_zero() {
            return fail("--duration must be positive");
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return fail("--rate must be a positive number");
        }
        if self.mode == (Mode::Closed { depth: 0 }) {
            return fail("--depth must be at least 1");
        }
        if self.backoff.min.is_zero() || self.backoff.max < self.backoff.min {
            return fail("backoff must satisfy 0 < min <= max");
        }
        if self.interval.is_zero() {
            return fail("--interval must be positive");
        }
        if self.protocol == Protocol::Etcd {
            return self.validate_etcd();
        }
        if self.protocol == Protocol::Qmp
            && let Some(lane) = self
                .lanes
                .iter()
                .find(|l| !matches!(l.args, None | Some(serde_json::Value::Object(_))))
        {
            return Err(Error::Config(format!(
                "lane '{}': QMP arguments must be an object",
                lane.name
            )));
        }
        Ok(())
    }

    /// etcd lanes: a path, a JSON object body, no out-of-band; order cannot be checked.
    fn validate_etcd(&self) -> Result<(), Error> {
        if self.verify_order == Some(true) {
            return Err(Error::Config(
                "--verify-order: HTTP replies carry no id, so their order cannot be checked".into(),
            ));
        }
        for lane in &self.lanes {
            let why = if !lane.cmd.starts_with('/') || lane.cmd.contains(char::is_whitespace) {
                "cmd must be a gateway path such as /v3/kv/put"
            } else if !matches!(lane.args, None | Some(serde_json::Value::Object(_))) {
                "args must be the JSON object body"
            } else if lane.oob {
                "etcd has no out-of-band lane"
            } else {
                continue;
            };
            return Err(Error::Config(format!("lane '{}': {why}", lane.name)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_named() {
        RunConfig::default().validate().unwrap();
        let bad = RunConfig { connections: 0, ..RunConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("--connections"));
        let bad = RunConfig { mode: Mode::Closed { depth: 0 }, ..RunConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("--depth"));
        let mut bad = RunConfig::default();
        bad.lanes[0].args = Some(serde_json::json!([1]));
        assert!(bad.validate().unwrap_err().to_string().contains("object"));
    }

    #[test]
    fn order_is_checked_where_the_protocol_promises_it_unless_overridden() {
        let qmp = RunConfig::default();
        assert_eq!(qmp.order_check(), (true, "the protocol promises it"));
        let rpc = RunConfig { protocol: Protocol::JsonRpc, ..RunConfig::default() };
        assert_eq!(rpc.order_check(), (false, "the protocol promises no reply order"));
        let forced = RunConfig { verify_order: Some(true), ..rpc };
        assert_eq!(forced.order_check(), (true, "--verify-order"));
        let off = RunConfig { verify_order: Some(false), ..qmp };
        assert_eq!(off.order_check(), (false, "--no-verify-order"));
    }

    #[test]
    fn etcd_lanes_are_paths_with_object_bodies_and_replies_are_matched_by_position() {
        let put = Lane::new("put", "/v3/kv/put", Some(serde_json::json!({"key": "YQ=="})), false);
        let etcd = RunConfig { protocol: Protocol::Etcd, lanes: vec![put], ..RunConfig::default() };
        etcd.validate().unwrap();
        assert!(!etcd.order_check().0);
        let check = |lane: Lane| {
            RunConfig { lanes: vec![lane], ..etcd.clone() }.validate().unwrap_err().to_string()
        };
        assert!(check(Lane::new("p", "kv/put", None, false)).contains("gateway path"));
        assert!(
            check(Lane::new("p", "/v3/kv/put", Some(serde_json::json!([1])), false))
                .contains("object body")
        );
        assert!(check(Lane::new("p", "/v3/kv/put", None, true)).contains("out-of-band"));
        let forced = RunConfig { verify_order: Some(true), ..etcd };
        assert!(forced.validate().unwrap_err().to_string().contains("--verify-order"));
    }

    #[test]
    fn start_at_takes_rfc3339_or_unix_seconds() {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_767_323_045_500);
        assert_eq!(parse_start_at("2026-01-02T03:04:05.5Z").unwrap(), at);
        assert_eq!(parse_start_at("1767323045.5").unwrap(), at);
        assert!(parse_start_at("tomorrow").unwrap_err().to_string().contains("RFC 3339"));
    }

    #[test]
    fn auto_spin_is_off_only_for_a_local_server_on_few_cores() {
        let embedded = RunConfig::default();
        assert!(!embedded.spin_decision(2).0);
        assert!(embedded.spin_decision(8).0);
        let unix = RunConfig { remotes: vec!["unix:/tmp/x".parse().unwrap()], ..embedded };
        assert_eq!(unix.spin_decision(4), (false, "auto: local server, 4 cores <= 4".into()));
        let far = RunConfig { remotes: vec!["tcp:10.0.0.1:1".parse().unwrap()], ..unix.clone() };
        assert_eq!(far.spin_decision(2), (true, "auto: remote server".into()));
        let on = RunConfig { spin: Spin::On, ..unix };
        assert_eq!(on.spin_decision(2), (true, "--spin on".into()));
    }
}
