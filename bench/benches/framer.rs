//! Measures splitting a pipelined byte stream into messages: the engine's framer
//! (`ooblane-wire`'s `Framer`, run over the whole buffer, noting each value's `id` span as it
//! goes) against the naive byte-at-a-time state machine (`bench::naive`), and, for
//! scale, serde_json's streaming deserializer (which also validates, so it is an upper bound
//! on what a "just parse it" framer costs).
//!
//! The stream is the whole corpus (40 B to 4 KiB requests, escaped strings, mixed separators)
//! repeated to 1 MiB, so it stays in L2/L3 and the figure is the framer's, not DRAM's.
//! Throughput: bytes/s.

use std::hint::black_box;

use bench::corpus;
use bench::naive;
use bench::wire::count_frames;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::de::IgnoredAny;

/// Stream length: big enough to amortise the per-call reset, small enough to stay in cache.
const STREAM_BYTES: usize = 1 << 20;

fn serde_stream(bytes: &[u8]) -> usize {
    serde_json::Deserializer::from_slice(bytes)
        .into_iter::<IgnoredAny>()
        .filter(Result::is_ok)
        .count()
}

fn framer(c: &mut Criterion) {
    let (stream, count) = corpus::stream(&corpus::corpus(), STREAM_BYTES);
    assert_eq!(count_frames(&stream), count, "the engine framer sees every message");
    assert_eq!(naive::count_frames(&stream), count, "the naive framer sees every message");
    assert_eq!(serde_stream(&stream), count, "serde_json sees every message");

    let mut group = c.benchmark_group("framer");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("engine_framer", |b| {
        b.iter(|| black_box(count_frames(black_box(&stream))))
    });
    group.bench_function("naive_byte_loop", |b| {
        b.iter(|| black_box(naive::count_frames(black_box(&stream))));
    });
    group.bench_function("serde_json_stream", |b| b.iter(|| black_box(serde_stream(&stream))));
    group.finish();
}

criterion_group! { name = benches; config = bench::criterion(); targets = framer }
criterion_main!(benches);
