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
//! Guides in the repository: `docs/embedding.md` (this API, with a complete example),
//! `docs/protocol.md` (the wire rules of both dialects), `docs/operations.md` (the `engine`
//! binary) and `docs/design.md` (the principles).
//!
//! # Layout
//! - [`address`](Address): `tcp:HOST:PORT` / `unix:PATH` addresses.
//! - `config`: [`Config`] and [`Limits`], plain data.
//! - `server`: [`Server::start`], [`ServerHandle`], thread start-up and shutdown.
//! - `listener`: per-thread listening sockets (`SO_REUSEPORT`).
//! - `admission`: the connection cap, the descriptor limit, recovery from `EMFILE`.
//! - `parser`: the parser thread's event loop.
//! - `conn`: a connection's socket, read buffer and write buffer.
//! - `budget`: byte accounting: every byte a connection holds, counted in one place.
//! - [`framer`](Framer): splits the byte stream into JSON values (clients use it too).
//! - `peek`: simd-json tape parsing in place, member lookup, argument decoding.
//! - `dispatch`: per-message decisions: OOB now, in-band job, or error in order.
//! - `qmp`: the QMP dialect: classification and encoding.
//! - `jsonrpc`: the OVS JSON-RPC 1.0 / 2.0 dialect: classification and encoding.
//! - `reply`: reply forms and ids, encoding dispatched by dialect.
//! - `lane`: a connection's ordered in-band replies, in-flight limit and parking.
//! - `call`: a decoded in-band call, typed arguments in and typed result out, reused.
//! - `job`: the hand-off: batches of jobs, outcome mailboxes, credits, the wake protocol.
//! - `executor`: the ordered executor thread.
//! - `replicated`: the executor's side of the replicated log (calls waiting for their entry).
//! - `replica`: the replicated log itself (opt-in): openraft, its redb log, snapshots,
//!   member-to-member network, proposal forwarding, `query-cluster`.
//! - `placement`: thread layout and pinning policy.
//! - `wiring`: builds a server's parts (used by `server` and `internals`).
//! - `registry`: the public command API.
//! - `introspect`: `query-qmp-schema` ([`SchemaInfo`]) from the registry's recorded schemas.
//! - `openrpc`: the `rpc.discover` document ([`OpenRpc`]) from the same schemas.
//! - `stats`: counters and latency histograms for `query-stats` and the metrics endpoint.
//! - `metrics`: the Prometheus / OpenMetrics endpoint (`--metrics tcp:HOST:PORT`), read at
//!   scrape time from `stats`.
//! - [`demo`]: the demo command set.
//! - `internals` (feature `internals`): hot-path pieces for the benchmarks.

mod address;
mod admission;
mod budget;
mod call;
mod config;
mod conn;
pub mod demo;
mod dispatch;
mod error;
mod executor;
mod framer;
#[cfg(feature = "internals")]
pub mod internals;
mod introspect;
mod job;
mod jsonrpc;
mod lane;
mod listener;
mod metrics;
mod openrpc;
mod parser;
mod peek;
mod placement;
mod qmp;
mod registry;
mod replica;
mod replicated;
mod reply;
mod server;
mod stats;
mod wiring;

pub use address::Address;
pub use config::{Config, Limits};
pub use error::Error;
pub use framer::{Frame, Framer, MAX_DEPTH, Step};
pub use introspect::SchemaInfo;
pub use openrpc::{DISCOVER, OpenRpc};
pub use registry::{
    CommandError, CommandInfo, Ctx, Empty, ErrorClass, Exec, Lane, NoArgs, Registry, VersionInfo,
    VersionTriple,
};
pub use replica::{ClusterStatus, MemberProgress, Replication};
pub use server::{Server, ServerHandle, ShutdownTrigger};
pub use stats::{
    Connections, ExecutorSnapshot, Memory, Percentiles, Queue, Requests, Stats, StatsSnapshot,
};
