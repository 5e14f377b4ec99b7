//! Checks the benchmark corpus is what the benchmarks claim: valid JSON requests of 40 B to
//! 4 KiB, each classified by the engine's peek the same way a full serde_json parse reads it
//! (lane and command name), and a pipelined stream of them framed into exactly its messages
//! by the engine's framer and by the naive byte loop.

use bench::corpus::{self, Dialect};
use bench::naive;
use bench::wire::{PADDING, Peek, count_frames};
use serde_json::Value;

#[test]
fn peek_agrees_with_a_full_parse_on_every_message() {
    let mut peek = Peek::default();
    for message in corpus::corpus() {
        let text = String::from_utf8_lossy(&message.bytes).into_owned();
        let value: Value = serde_json::from_slice(&message.bytes).expect(&text);
        let mut buf = message.padded(PADDING);
        let len = message.bytes.len();
        match message.dialect {
            Dialect::Qmp => {
                let name = value.get("exec-oob").or_else(|| value.get("execute"));
                let name = name.and_then(Value::as_str).expect(&text);
                assert_eq!(value.get("exec-oob").is_some(), message.oob, "{text}");
                assert_eq!(peek.qmp(&mut buf, len), Some((message.oob, name.len())), "{text}");
            }
            Dialect::JsonRpc => {
                let name = value["method"].as_str().expect(&text);
                assert_eq!(peek.jsonrpc(&mut buf, len), Some(name.len()), "{text}");
            }
        }
    }
}

#[test]
fn framers_split_the_stream_into_its_messages() {
    let (stream, count) = corpus::stream(&corpus::corpus(), 1 << 18);
    assert_eq!(count_frames(&stream), count);
    assert_eq!(naive::count_frames(&stream), count);
}
