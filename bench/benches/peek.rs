//! Measures classifying requests (lane, command name) with the engine's peek (simd-json into a
//! reused tape, in place, read straight off the tape) against the obvious alternatives:
//! `serde_json::from_slice::<Value>`, a borrowed serde struct (`Cow<str>` names, ignored
//! arguments), and simd-json's plain `to_borrowed_value` (fresh buffers every call). Each
//! alternative also looks up the command name, so all four do the same job.
//!
//! One iteration classifies a whole corpus (`bench::corpus`: small = up to 256 B, large =
//! 257 B to 4 KiB), so throughput is reported as messages/s and bytes/s.
//!
//! The engine peek and `to_borrowed_value` parse in place and so destroy their input: they run
//! under `iter_batched_ref`, whose setup (copying the corpus into fresh padded buffers) is not
//! timed and whose inputs are dropped after the timer stops. The serde variants only read,
//! so they run under plain `iter` on the same bytes.

use std::borrow::Cow;
use std::hint::black_box;

use bench::corpus::{self, Dialect, Message};
use bench::wire::{PADDING, Peek};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use serde::de::IgnoredAny;
use simd_json::prelude::*;

/// A request of either dialect, borrowing its names from the input where no escape forces a
/// copy; members are checked (unknown ones rejected) but their values skipped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request<'a> {
    #[serde(borrow)]
    execute: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "exec-oob")]
    exec_oob: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(rename = "arguments")]
    _arguments: Option<IgnoredAny>,
    #[serde(rename = "params")]
    _params: Option<IgnoredAny>,
    #[serde(rename = "id")]
    _id: Option<IgnoredAny>,
    #[serde(rename = "jsonrpc")]
    _jsonrpc: Option<IgnoredAny>,
}

fn engine_peek(peek: &mut Peek, messages: &[Message], buffers: &mut [Vec<u8>]) -> usize {
    let mut names = 0;
    for (message, buf) in messages.iter().zip(buffers) {
        let len = message.bytes.len();
        names += match message.dialect {
            Dialect::Qmp => peek.qmp(buf, len).map_or(0, |(oob, name)| name + usize::from(oob)),
            Dialect::JsonRpc => peek.jsonrpc(buf, len).unwrap_or(0),
        };
    }
    names
}

fn serde_value(messages: &[Message]) -> usize {
    let mut names = 0;
    for message in messages {
        let value: serde_json::Value = serde_json::from_slice(&message.bytes).expect("valid");
        let oob = value.get("exec-oob");
        let name = oob.or_else(|| value.get("execute")).or_else(|| value.get("method"));
        names += name.and_then(|n| n.as_str()).map_or(0, str::len) + usize::from(oob.is_some());
    }
    names
}

fn serde_struct(messages: &[Message]) -> usize {
    let mut names = 0;
    for message in messages {
        let request: Request<'_> = serde_json::from_slice(&message.bytes).expect("valid");
        let oob = request.exec_oob.is_some();
        let name = request.exec_oob.or(request.execute).or(request.method);
        names += name.map_or(0, |n| n.len()) + usize::from(oob);
    }
    names
}

fn simd_borrowed(buffers: &mut [Vec<u8>]) -> usize {
    let mut names = 0;
    for buf in buffers {
        let value = simd_json::to_borrowed_value(buf).expect("valid");
        let oob = value.get("exec-oob");
        let name = oob.or_else(|| value.get("execute")).or_else(|| value.get("method"));
        names += name.and_then(|n| n.as_str()).map_or(0, str::len) + usize::from(oob.is_some());
    }
    names
}

fn group(c: &mut Criterion, name: &str, messages: &[Message]) {
    let padded: Vec<Vec<u8>> = messages.iter().map(|m| m.padded(PADDING)).collect();
    let plain: Vec<Vec<u8>> = messages.iter().map(|m| m.bytes.clone()).collect();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::ElementsAndBytes {
        elements: messages.len() as u64,
        bytes: corpus::total_bytes(messages),
    });
    let mut peek = Peek::default();
    group.bench_function("engine_peek", |b| {
        b.iter_batched_ref(
            || padded.clone(),
            |buffers| black_box(engine_peek(&mut peek, messages, buffers)),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("serde_json_value", |b| b.iter(|| black_box(serde_value(messages))));
    group.bench_function("serde_struct_borrowed", |b| {
        b.iter(|| black_box(serde_struct(messages)));
    });
    group.bench_function("simd_json_to_borrowed_value", |b| {
        b.iter_batched_ref(
            || plain.clone(),
            |buffers| black_box(simd_borrowed(buffers)),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn peek(c: &mut Criterion) {
    group(c, "peek/small", &corpus::small());
    group(c, "peek/large", &corpus::large());
}

criterion_group! { name = benches; config = bench::criterion(); targets = peek }
criterion_main!(benches);
