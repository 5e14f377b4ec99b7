//! Integration tests over real sockets against in-process engines (the `ooblane` binary has
//! its own test in `engine/server/tests/binary.rs`, where Cargo builds the binary for it).
//! One test binary; one module per concern. Every read has a timeout (`tests::READ_TIMEOUT`);
//! nothing sleeps to let things settle: order is forced with `stall`/`release` and OOB probes.

mod bad_input;
mod budget;
mod closing;
mod durable;
mod flow;
mod ids;
mod introspection;
mod jsonrpc;
mod loadgen;
mod loadgen_etcd;
mod log_port;
mod metrics;
mod oob;
mod ordering;
mod panics;
mod session;
mod shutdown;
mod timeouts;
mod unix;
