//! Shared pieces of the criterion benchmarks in `benches/` (one file per subsystem: `peek`,
//! `framer`, `handoff`, `pipeline`) and of the tests in `tests/`.
//!
//! # Layout
//! - [`corpus`]: the deterministic request corpus (QMP and JSON-RPC, 40 B to 4 KiB).
//! - [`demo`]: the demo commands as the comparison servers (`naive-qmp`, `tuned-qmp`) run them.
//! - [`naive`]: the obvious alternatives that are ours to write (a byte-loop framer, an
//!   `std::sync::mpsc` executor round trip).
//! - [`wire`]: the engine's framer and peek, driven through `ooblane-wire`.
//! - [`criterion()`]: the short measurement settings every benchmark uses.

pub mod corpus;
pub mod demo;
pub mod naive;
pub mod wire;

use std::time::Duration;

use criterion::Criterion;

/// Short settings so the whole `cargo bench -p bench` stays within a few minutes on a shared
/// 2-core machine; the groups compare alternatives side by side, so relative numbers matter
/// more than the last percent of absolute precision.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args()
}
