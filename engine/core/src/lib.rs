//! A thread-per-core command dispatcher for JSON control planes (QEMU's QMP, OVS-style
//! JSON-RPC) with an out-of-band lane: urgent commands are answered by the thread that read
//! them, in microseconds, even while the ordered command queue is saturated or stuck.
//!
//! ```text
//!  clients ──► parser thread 0..N-1 (one per core, pinned, own mio loop, own listeners)
//!                read ► frame ► peek (simd-json tape, in place)
//!                  ├─ exec-oob ► run handler here ► encode ► connection write buffer
//!                  └─ in-band  ► decode args here ► Job ─► one batch per loop turn ─┐
//!                                                                                  ▼
//!                                      executor thread (one, on a core of its own):
//!                                      runs jobs one at a time, in one total order,
//!                                      owns the state; never touches JSON or sockets
//!                outcome ring ◄── per-thread, wake at most once per batch (if asleep) ◄┘
//!                encode ► write buffer ► one write per connection per loop turn
//! ```
//!
//! Embedding: build a [`Registry`] of commands (in-band handlers get `&mut S` on the
//! executor, allow-oob handlers a shared `&V` on the parser thread), then
//! [`Server::start`] with a [`Config`]. [`demo::registry`] is the demo command set.
//!
//! This crate is the dispatch core. The wire formats it reads and writes are the
//! `ooblane-wire` crate (re-exported here where a handler needs them); a durable or
//! Raft-replicated log plugs in through the [`replication`] port (`ooblane-raft` implements
//! it); the `ooblane` server binary (`ooblane-server`: command line, signals, Prometheus
//! metrics) sits on top. An embedder that needs none of those compiles none of them.
//!
//! Guides in the repository: `docs/embedding.md` (this API, with a complete example),
//! `docs/protocol.md` (the wire rules of both dialects), `docs/operations.md` (the `ooblane`
//! binary), `docs/cluster.md` (the replicated log) and `docs/design.md` (the principles).
//!
//! # Layout
//!
//! In reading order, leaves first: each module imports only modules listed before it (and
//! `ooblane-wire`).
//! - `error`: [`Error`], what starting a server can fail with.
//! - `budget`: byte accounting: every byte a connection holds, counted in one place.
//! - `introspect`: `query-qmp-schema` ([`SchemaInfo`]) from the registry's recorded schemas.
//! - `openrpc`: the `rpc.discover` document ([`OpenRpc`]) from the same schemas.
//! - [`replication`]: the port for a replicated log: [`ReplicatedLog`] and its messages.
//! - `stats`: counters and latency histograms for `query-stats`.
//! - `scrape`: the same, read into plain data for a metrics exporter ([`Scrape`]).
//! - `exec`: what a handler sees: [`Ctx`] and [`Exec`].
//! - `call`: a decoded in-band call, typed arguments in and typed result out, reused.
//! - `job`: the hand-off: batches of jobs, outcome mailboxes, credits, the wake protocol.
//! - `lane`: a connection's ordered in-band replies, in-flight limit and parking.
//! - `conn`: a connection's socket, read buffer and write buffer.
//! - `listener`: per-thread listening sockets (`SO_REUSEPORT`).
//! - `admission`: the connection cap, the descriptor limit, recovery from `EMFILE`.
//! - `config`: [`Config`] and [`Limits`], plain data, validated once.
//! - `placement`: thread layout and pinning policy.
//! - `registry`: the public command API ([`Registry`]).
//! - `parked`: the executor's side of a replicated log: calls waiting for their entry.
//! - `idle`: the idle policy: how long a thread polls for work before it parks.
//! - `executor`: the ordered executor thread.
//! - `dispatch`: per-message decisions: OOB now, in-band job, or error in order.
//! - `parser`: the parser thread's event loop.
//! - `wiring`: builds a server's parts (used by `server` and `internals`).
//! - `server`: [`Server::start`], [`ServerHandle`], thread start-up and shutdown.
//! - [`demo`]: the demo command set.
//! - `internals` (feature `internals`): the whole request path without sockets, and the
//!   hand-off, for the benchmarks and fuzz targets.

mod admission;
mod budget;
mod call;
mod config;
mod conn;
pub mod demo;
mod dispatch;
mod error;
mod exec;
mod executor;
mod idle;
#[cfg(feature = "internals")]
pub mod internals;
mod introspect;
mod job;
mod lane;
mod listener;
mod openrpc;
mod parked;
mod parser;
mod placement;
mod registry;
pub mod replication;
mod scrape;
mod server;
mod stats;
mod wiring;

pub use config::{Config, Limits};
pub use error::Error;
pub use exec::{CommandInfo, Ctx, Exec};
pub use introspect::SchemaInfo;
pub use ooblane_wire::{
    Address, CommandError, Empty, ErrorClass, NoArgs, VersionInfo, VersionTriple,
};
pub use openrpc::{DISCOVER, OpenRpc};
pub use registry::{Lane, Registry, RemoveMemberArgs};
pub use replication::{ClusterStatus, MemberProgress, ReplicatedLog};
pub use scrape::{Buckets, Routed, Scrape};
pub use server::{Server, ServerHandle, ShutdownTrigger};
pub use stats::{
    Connections, ExecutorSnapshot, Memory, Percentiles, Queue, Requests, Stats, StatsSnapshot,
};
