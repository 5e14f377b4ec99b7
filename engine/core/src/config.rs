//! Server configuration: plain data with `Default`, validated once by `Server::start`.

use crate::{Address, Error};

/// Everything `Server::start` needs besides the commands.
#[derive(Clone, Debug)]
pub struct Config {
    /// QMP listeners. `Server::start` with no listener at all serves QMP on
    /// [`Config::DEFAULT_QMP`].
    pub qmp: Vec<Address>,
    /// OVS-style JSON-RPC listeners.
    pub jsonrpc: Vec<Address>,
    /// Parser threads; 0 means the default layout: with C usable cores, C − 1 parser threads
    /// and the executor alone on the last core (one parser thread when C = 1).
    pub threads: usize,
    /// Pin parser threads (and the executor, when a core is left for it) to cores. Without
    /// pinning the executor cannot own a core, so it never spins before parking.
    pub pin: bool,
    /// Nice value of the executor thread (0: unchanged). Where the executor shares a core
    /// with a parser thread, a positive value lets the parser thread preempt it at once when
    /// a request arrives, so OOB latency does not wait for the scheduler's time slice.
    pub executor_nice: i32,
    /// How long the executor, with a core of its own, may poll for the next batch before it
    /// parks. Polling spares a wake-up (a context switch on each side) when the batch comes
    /// soon, at the price of CPU time on that core; the idle policy stops it where it does
    /// not pay (`idle.rs`). Zero never polls. Ignored unless the layout gives the executor a
    /// core of its own.
    pub spin: std::time::Duration,
    /// How long a parser thread may poll for the outcomes of the jobs it just handed over
    /// before it sleeps, under the same idle policy and the same layout condition as
    /// [`Config::spin`]. Zero never polls.
    pub await_outcomes: std::time::Duration,
    /// Limits that keep per-connection memory bounded.
    pub limits: Limits,
    /// Text of the greeting's `package` field.
    pub package: String,
}

/// Per-connection and per-server bounds. Every one is a memory or fairness bound: past it
/// the engine stops reading a socket or answers an error, it never drops a request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted message. QEMU allows 64 MiB; a control plane rarely needs more than
    /// a few KiB, and this is also the most a single connection's read buffer can grow to.
    pub max_message_bytes: usize,
    /// In-band requests of one connection submitted to the executor at once; later ones are
    /// parked in the connection (reading and OOB go on). QEMU's equivalent is 8.
    pub max_inflight_per_conn: usize,
    /// Bytes one connection may make the engine hold (parked requests, replies owed, with an
    /// estimate for those still with the executor, unsent output, and its read buffer) beyond
    /// which the engine stops reading and handling its input, and submits no more of its
    /// jobs, until the client catches up. At least twice `max_message_bytes` and 64 KiB.
    pub conn_budget_bytes: usize,
    /// In-band jobs outstanding (handed to the executor and not yet answered) across all
    /// parser threads, enforced by credits (`job.rs`). Beyond it jobs park in their
    /// connections; it never blocks a parser thread.
    pub queue_capacity: usize,
    /// How long graceful shutdown waits for clients to take their last replies.
    pub drain_timeout: std::time::Duration,
    /// Open connections (all listeners) past which a new one gets one error in its dialect
    /// and is closed. 0 (the default): derived at start from the descriptor limit, which
    /// `Server::start` first raises to its hard limit, leaving headroom (at least 64, or a
    /// sixteenth) for the engine's own descriptors: 960 at a limit of 1024.
    pub max_connections: usize,
    /// How long a QMP client has, from its connection, to finish capabilities negotiation
    /// (`qmp_capabilities`); past it the connection gets one `GenericError` without id and
    /// is closed. Real clients negotiate at once; this ends connections that never do.
    /// Zero disables it. Negotiated sessions are never timed out, however long they stay
    /// idle (libvirt keeps its QMP connections idle for days).
    pub negotiation_timeout: std::time::Duration,
    /// How long a message may stay incomplete (begun, not finished, counted from its first
    /// byte: trickling more bytes does not extend it); past it the connection gets one error
    /// without id (JSON-RPC: `"id": null`) and is closed. Real clients send a message in
    /// one go; this ends clients that hold a connection with a message they never finish.
    /// Idle connections with nothing buffered are never timed out. Zero disables it.
    pub incomplete_timeout: std::time::Duration,
    /// Bytes all connections together may make the engine hold (each counted as for
    /// `conn_budget_bytes`). Past it, the connections holding more than their fair share
    /// (this limit divided by the open connections, beyond their initial read buffer) stop
    /// reading and handling input until memory drains; the others go on, so their OOB
    /// requests still run. Nothing read is dropped. 0 (the default): derived at start from
    /// the machine, a quarter of `MemTotal` in `/proc/meminfo`, at most 4 GiB.
    pub memory_limit_bytes: usize,
}

impl Limits {
    /// The smallest `conn_budget_bytes`: room for the read buffer's initial 16 KiB and a
    /// few replies.
    pub const MIN_BUDGET: usize = 64 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1 << 20,
            max_inflight_per_conn: 256,
            conn_budget_bytes: 4 << 20,
            queue_capacity: 16 * 1024,
            drain_timeout: std::time::Duration::from_secs(5),
            max_connections: 0,
            negotiation_timeout: std::time::Duration::from_secs(30),
            incomplete_timeout: std::time::Duration::from_secs(30),
            memory_limit_bytes: 0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            qmp: Vec::new(),
            jsonrpc: Vec::new(),
            threads: 0,
            pin: true,
            executor_nice: 0,
            spin: Config::DEFAULT_SPIN,
            await_outcomes: Config::DEFAULT_AWAIT_OUTCOMES,
            limits: Limits::default(),
            package: format!("ooblane {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl Config {
    /// Default [`Config::spin`]: none. Measured on a 2-core machine with the client on the
    /// same cores (results/2026-12-04-paced), an executor polling up to 20 or 50 µs cost
    /// CPU and throughput under pipelined load (in-band CPU per reply +11 to +19%,
    /// throughput -7 to -13%) and, at 20,000 paced requests a second, doubled the
    /// executor's CPU per request to spare 0.6 context switches: a wake-up there costs less
    /// than the gaps it would poll through. With clients elsewhere and cores to spare, try
    /// 10-20 µs.
    pub const DEFAULT_SPIN: std::time::Duration = std::time::Duration::ZERO;

    /// Default [`Config::await_outcomes`]: 0 (never polls). In the paced sitting
    /// (results/2026-12-04-paced: clients on the same two cores, 1,000 to 20,000 requests a
    /// second) a 20 µs window cost 12-32% more CPU per in-band request and raised p50 at
    /// every rate; it spared context switches only at 20,000 a second. With clients on
    /// other machines and the parser threads' cores to themselves, try 10-20 µs.
    pub const DEFAULT_AWAIT_OUTCOMES: std::time::Duration = std::time::Duration::ZERO;

    /// The listener used when none is configured.
    pub const DEFAULT_QMP: &'static str = "tcp:127.0.0.1:4444";

    /// Checks the configuration once, filling in defaults.
    pub(crate) fn validated(mut self) -> Result<Config, Error> {
        if self.qmp.is_empty() && self.jsonrpc.is_empty() {
            self.qmp.push(Self::DEFAULT_QMP.parse()?);
        }
        let fd_limit = crate::admission::raise_fd_limit();
        if self.limits.max_connections == 0 {
            self.limits.max_connections = crate::admission::default_max_connections(fd_limit);
        }
        tracing::debug!(fd_limit, max_connections = self.limits.max_connections, "admission");
        if self.limits.memory_limit_bytes == 0 {
            self.limits.memory_limit_bytes = crate::budget::default_memory_limit();
        }
        tracing::debug!(memory_limit = self.limits.memory_limit_bytes, "memory");
        let limits = &self.limits;
        if limits.max_message_bytes < 64 {
            return Err(Error::Config("max_message_bytes must be at least 64".into()));
        }
        if limits.max_inflight_per_conn == 0 || limits.queue_capacity == 0 {
            return Err(Error::Config("in-flight limit and queue capacity must be > 0".into()));
        }
        // The read buffer (up to a message plus one read) is on the budget: the budget must
        // leave room for it beyond it, or a connection could pause on its own buffer.
        if limits.conn_budget_bytes < (2 * limits.max_message_bytes).max(Limits::MIN_BUDGET) {
            return Err(Error::Config(
                "conn_budget_bytes must be >= 2 x max_message_bytes and >= 64 KiB".into(),
            ));
        }
        if self.threads > 1024 {
            return Err(Error::Config("at most 1024 parser threads".into()));
        }
        Ok(self)
    }
}
