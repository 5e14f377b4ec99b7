//! A thread-per-core command dispatcher for JSON control planes (QEMU's QMP, OVS-style
//! JSON-RPC) with an out-of-band lane: urgent commands are answered by the thread that read
//! them, in microseconds, even while the ordered command queue is saturated or stuck.
//!
//! ```text
//!  clients ──► parser thread 0..N-1 (one per core, pinned, own mio loop, own listeners)
//!                read ► frame ► peek (simd-json tape, in place)
//!                  ├─ exec-oob ► run handler here ► encode ► connection write buffer
//!                  └─ in-band  ► decode args here ► Job ──► crossbeam queue ──┐
//!                                                                             ▼
//!                                          executor thread (one): runs jobs one at a
//!                                          time, in one total order, owns the state;
//!                                          never touches JSON or sockets
//!                reply inbox ◄── per-thread queue + wake (only if asleep) ◄──┘
//!                encode ► write buffer ► one write per connection per loop turn
//! ```
//!
//! Embedding: build a [`Registry`] of commands (in-band handlers get `&mut S` on the
//! executor, allow-oob handlers a shared `&V` on the parser thread), then
//! [`Server::start`] with a [`Config`]. [`demo::registry`] is the demo command set.
//!
//! # Layout
//! - [`address`](Address): `tcp:HOST:PORT` / `unix:PATH` addresses.
//! - `config`: [`Config`] and [`Limits`], plain data.
//! - `server`: [`Server::start`], [`ServerHandle`], thread start-up and shutdown.
//! - `listener`: per-thread listening sockets (`SO_REUSEPORT`).
//! - `admission`: the connection cap, the descriptor limit, recovery from `EMFILE`.
//! - `parser`: the parser thread's event loop.
//! - `conn`: a connection's socket, read buffer and write buffer.
//! - [`framer`](Framer): splits the byte stream into JSON values (clients use it too).
//! - `peek`: simd-json tape parsing in place, member lookup, argument decoding.
//! - `dispatch`: per-message decisions: OOB now, in-band job, or error in order.
//! - `qmp`: the QMP dialect: classification and encoding.
//! - `jsonrpc`: the OVS JSON-RPC 1.0 / 2.0 dialect: classification and encoding.
//! - `reply`: reply forms and ids, encoding dispatched by dialect.
//! - `lane`: a connection's ordered in-band replies, in-flight limit and parking.
//! - `job`: jobs, inbox messages, and the sleep/wake protocol.
//! - `executor`: the ordered executor thread.
//! - `registry`: the public command API.
//! - `stats`: counters and latency histograms for `query-stats`.
//! - [`demo`]: the demo command set.
//! - `internals` (feature `internals`): hot-path pieces for the benchmarks.

mod address;
mod admission;
mod config;
mod conn;
pub mod demo;
mod dispatch;
mod error;
mod executor;
mod framer;
#[cfg(feature = "internals")]
pub mod internals;
mod job;
mod jsonrpc;
mod lane;
mod listener;
mod parser;
mod peek;
mod qmp;
mod registry;
mod reply;
mod server;
mod stats;

pub use address::Address;
pub use config::{Config, Limits};
pub use error::Error;
pub use framer::{Frame, Framer, MAX_DEPTH, Step};
pub use registry::{
    CommandError, CommandInfo, Ctx, Empty, ErrorClass, Exec, Lane, NoArgs, Registry, VersionInfo,
    VersionTriple,
};
pub use server::{Server, ServerHandle, ShutdownTrigger};
pub use stats::{
    Connections, ExecutorSnapshot, Percentiles, Queue, Requests, Stats, StatsSnapshot,
};
