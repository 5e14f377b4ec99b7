//! Checks the target "the OOB peek allocates nothing per message in steady state", by count,
//! not by timing: after one warm-up pass over the corpus (which sizes the reused simd-json
//! buffers and tapes), peeking every corpus message again makes zero allocations.
//!
//! Allocations are counted per thread by `allocation-counter`, which installs its own global
//! allocator; this test binary is the only one that links it, so the benchmarks run on the
//! system allocator and this file needs no `unsafe`.

use bench::corpus::{self, Dialect};
use engine::internals::{PADDING, Peek};

#[test]
fn peek_allocates_nothing_per_message_after_warm_up() {
    let messages = corpus::corpus();
    let mut buffers: Vec<Vec<u8>> = messages.iter().map(|m| m.padded(PADDING)).collect();
    let mut peek = Peek::default();
    let mut peek_all = |buffers: &mut Vec<Vec<u8>>| {
        for (message, buf) in messages.iter().zip(buffers.iter_mut()) {
            buf[..message.bytes.len()].copy_from_slice(&message.bytes);
            let len = message.bytes.len();
            let ok = match message.dialect {
                Dialect::Qmp => peek.qmp(buf, len).is_some(),
                Dialect::JsonRpc => peek.jsonrpc(buf, len).is_some(),
            };
            assert!(ok, "{}", String::from_utf8_lossy(&message.bytes));
        }
    };
    let probe = allocation_counter::measure(|| drop(std::hint::black_box(vec![0u8; 16])));
    assert_eq!(probe.count_total, 1, "the counting allocator is installed");
    peek_all(&mut buffers);
    let steady = allocation_counter::measure(|| peek_all(&mut buffers));
    assert_eq!(steady.count_total, 0, "{} messages peeked: {steady:?}", messages.len());
}
