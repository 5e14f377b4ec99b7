//! Checks the target "the OOB peek allocates nothing per message in steady state", by count,
//! not by timing: after one warm-up pass over the corpus (which sizes the reused simd-json
//! buffers and tapes), peeking every corpus message again makes zero allocations; and the
//! same for the parser thread's whole OOB request path, from bytes in to reply bytes out.
//!
//! Allocations are counted per thread by `allocation-counter`, which installs its own global
//! allocator; this test binary is the only one that links it, so the benchmarks run on the
//! system allocator and this file needs no `unsafe`.

use bench::corpus::{self, Dialect};
use bench::wire::{PADDING, Peek};

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

/// The whole OOB request path of a parser thread (read into the connection buffer, frame,
/// peek, classify, look up, decode arguments, run the handler, encode the reply with the echoed
/// id into the write buffer) allocates nothing per request once warm. `Pipeline::feed` for OOB
/// requests never touches the executor, so everything counted here is the parser thread's.
#[test]
fn the_oob_request_path_allocates_nothing_per_request_after_warm_up() {
    let mut pipeline = ooblane::internals::Pipeline::start();
    let burst = br#"{"exec-oob":"ping","id":{"n":[1,"two"]}}{"exec-oob":"query-counter","id":7}"#
        .repeat(64);
    for _ in 0..4 {
        pipeline.feed(&burst);
    }
    let steady = allocation_counter::measure(|| {
        for _ in 0..100 {
            assert!(pipeline.feed(&burst) > 0);
        }
    });
    assert_eq!(steady.count_total, 0, "12,800 OOB requests: {steady:?}");
}
