//! The wire formats of the ooblane dispatcher, the leaf every other layer builds on: bytes
//! in, classified requests out, replies and events back to bytes. Nothing here owns a
//! socket, a thread or a command; parser threads (in `ooblane`) and clients (`loadgen`) call
//! into it.
//!
//! ```text
//!  bytes ─► Framer (split the stream into JSON values) ─► Peeker (simd-json tape, in place)
//!            ─► qmp::classify / jsonrpc::classify (command, lane, arguments, id)
//!  outcome ─► reply (QMP, OVS JSON-RPC 1.0 or 2.0, with the request's own id bytes) ─► bytes
//! ```
//!
//! # Layout (leaves first: each module imports only those above it)
//! - [`address`](Address): `tcp:HOST:PORT` / `unix:PATH` addresses.
//! - [`vocab`]: the shared vocabulary: [`CommandError`] and its [`ErrorClass`], [`Event`],
//!   [`Empty`] / [`NoArgs`], the greeting's [`VersionInfo`], the [`Dialect`] of a listener.
//! - [`framer`](Framer): splits the byte stream into top-level JSON values.
//! - [`peek`]: parses a framed value in place into a reused simd-json tape; member lookup and
//!   typed argument decoding straight off the tape.
//! - [`qmp`]: the QMP dialect: session modes, classification in QEMU's order of checks, the
//!   encoding of greetings, replies and events.
//! - [`jsonrpc`]: OVS JSON-RPC 1.0 (and 2.0): classification and encoding.
//! - [`reply`]: reply forms and echoed ids, encoding dispatched by form.
//!
//! File by file, `reply` sits inside the dialects: it dispatches to their `encode` files
//! (which import only `vocab`), and their `classify` files name its [`reply::Form`]; so the
//! order is `qmp/encode`, `jsonrpc/encode`, `reply`, then the `classify` files.

mod address;
mod framer;
pub mod jsonrpc;
pub mod peek;
pub mod qmp;
pub mod reply;
pub mod vocab;

pub use address::{Address, AddressError};
pub use framer::{Frame, Framer, MAX_DEPTH, Step, copy_compact};
pub use vocab::{
    CommandError, Dialect, Empty, ErrorClass, Event, NoArgs, VersionInfo, VersionTriple,
};
