//! Measures the engine's in-process request path end to end, without sockets (`Pipeline`:
//! bytes in as if read, framing, peek, OOB execution on this thread or the job hand-off to a
//! real executor thread running the demo command set, reply encoding, reply bytes out), for
//! an OOB `ping` and an in-band `counter-add`, one request at a time and 64 pipelined.
//!
//! The obvious alternative in the same group is the single-threaded server a first version
//! would be: `serde_json::Value` per request, the command run inline (no executor thread,
//! no OOB lane), the reply built as a `Value` and serialised. It does less (no ordering
//! across connections, no isolation) and shows what the engine's split costs or saves.
//! Throughput: requests/s and request bytes/s.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ooblane::internals::Pipeline;
use serde_json::{Value, json};

/// Requests per fed chunk: one at a time, and a pipelined burst (loadgen's depth 64).
const DEPTHS: [usize; 2] = [1, 64];

/// The requests measured: (group name, request).
const REQUESTS: [(&str, &str); 2] = [
    ("pipeline/ping_oob", r#"{"exec-oob":"ping","id":12345}"#),
    (
        "pipeline/counter_add_inband",
        r#"{"execute":"counter-add","arguments":{"delta":1},"id":12345}"#,
    ),
];

/// Answers every request in `bytes` inline with serde_json; returns the reply bytes.
fn serde_inline(bytes: &[u8], counter: &mut i64, out: &mut Vec<u8>) -> usize {
    out.clear();
    for request in serde_json::Deserializer::from_slice(bytes).into_iter::<Value>() {
        let request = request.expect("valid");
        let name = request.get("exec-oob").or_else(|| request.get("execute"));
        let result = match name.and_then(Value::as_str) {
            Some("counter-add") => {
                *counter += request["arguments"]["delta"].as_i64().expect("delta");
                json!({ "value": *counter })
            }
            _ => json!({}),
        };
        let reply = json!({ "return": result, "id": request.get("id").cloned() });
        serde_json::to_writer(&mut *out, &reply).expect("vec");
        out.extend_from_slice(b"\r\n");
    }
    out.len()
}

fn pipeline(c: &mut Criterion) {
    let mut pipeline = Pipeline::start();
    let (mut counter, mut out) = (0, Vec::new());
    for (name, request) in REQUESTS {
        let mut group = c.benchmark_group(name);
        for depth in DEPTHS {
            let chunk = request.repeat(depth).into_bytes();
            group.throughput(Throughput::ElementsAndBytes {
                elements: depth as u64,
                bytes: chunk.len() as u64,
            });
            group.bench_with_input(BenchmarkId::new("engine", depth), &chunk, |b, chunk| {
                b.iter(|| black_box(pipeline.feed(chunk)));
            });
            group.bench_with_input(
                BenchmarkId::new("serde_json_inline", depth),
                &chunk,
                |b, chunk| {
                    b.iter(|| black_box(serde_inline(chunk, &mut counter, &mut out)));
                },
            );
        }
        group.finish();
    }
}

criterion_group! { name = benches; config = bench::criterion(); targets = pipeline }
criterion_main!(benches);
