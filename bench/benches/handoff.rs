//! Measures the parser → executor → parser round trip on two threads through the engine's
//! own pieces (`Handoff`: crossbeam job queue, the executor's batch loop, the per-thread
//! reply inbox, the mailbox's wake-only-if-asleep protocol, the parser sleeping in mio's
//! `poll`) against two `std::sync::mpsc` channels with blocking `recv` on each side.
//!
//! Jobs are no-op boxed closures, so this is pure hand-off cost: per job (batch 1: every job
//! pays a sleep and a wake-up) and batched (64 jobs sent, then all replies awaited: the
//! executor drains in batches and wakes the parser once). Throughput: jobs/s.

use std::hint::black_box;

use bench::naive::MpscHandoff;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ooblane::internals::Handoff;

/// Jobs per round trip: one, and a pipelined burst as loadgen sends at depth 64.
const BATCHES: [usize; 2] = [1, 64];

fn handoff(c: &mut Criterion) {
    let mut engine = Handoff::start();
    let mut mpsc = MpscHandoff::start();
    let mut group = c.benchmark_group("handoff");
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("engine", batch), &batch, |b, &n| {
            b.iter(|| engine.round_trip(black_box(n)));
        });
        group.bench_with_input(BenchmarkId::new("std_mpsc", batch), &batch, |b, &n| {
            b.iter(|| mpsc.round_trip(black_box(n)));
        });
    }
    group.finish();
}

criterion_group! { name = benches; config = bench::criterion(); targets = handoff }
criterion_main!(benches);
