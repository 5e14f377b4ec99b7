//! The whole request path of a parser thread (`ooblane::internals::Pipeline`): framing, peek,
//! classification, OOB execution, job hand-off to a real executor thread running the demo
//! command set, reply encoding. Any bytes in any chunking, on a QMP session before or after
//! negotiation or a JSON-RPC session: never panics or hangs, and every reply line is one JSON
//! object with `return` or `error` (QMP, CRLF-terminated) or `result` or `error` (JSON-RPC).
//!
//! Input: byte 0 picks the session, byte 1 the chunk size, the rest is the stream.

#![no_main]

use ooblane::internals::{Pipeline, SessionKind};
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// One pipeline for the whole run: starting one spawns an executor thread.
    static PIPELINE: std::cell::RefCell<Pipeline> = std::cell::RefCell::new(Pipeline::start());
}

/// Demo commands that hold the executor for seconds (`stall` until `release` or its timeout,
/// `work` for up to 10 s): a fuzzer that finds them only measures sleeping, and the
/// pipeline's 10 s wait for a reply would report a false hang. Inputs naming them are
/// skipped; the name is looked for after decoding `\u00XX` escapes, so escaped spellings are
/// skipped too (over-approximating is fine: an escaped backslash only skips more).
fn names_a_blocking_command(stream: &[u8]) -> bool {
    let mut plain = Vec::with_capacity(stream.len());
    let mut i = 0;
    while i < stream.len() {
        let escape = stream.get(i..i + 6).filter(|e| e.starts_with(b"\\u00"));
        let byte = escape
            .and_then(|e| std::str::from_utf8(&e[4..]).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match byte {
            Some(byte) => {
                plain.push(byte);
                i += 6;
            }
            None => {
                plain.push(stream[i]);
                i += 1;
            }
        }
    }
    [&b"stall"[..], b"work"].iter().any(|name| plain.windows(name.len()).any(|w| w == *name))
}

/// A whole reply line. No recursion limit: an echoed `id` may nest as deep as a request
/// may (`ooblane_wire::MAX_DEPTH`), past serde_json's default of 128.
fn parse(text: &[u8]) -> serde_json::Result<serde_json::Value> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_slice(text);
    de.disable_recursion_limit();
    let value = serde_json::Value::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

fn check_replies(kind: SessionKind, out: &[u8]) {
    assert!(out.is_empty() || out.ends_with(b"\n"), "a partial reply line");
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let text = if kind == SessionKind::JsonRpc {
            line
        } else {
            line.strip_suffix(b"\r").expect("QMP lines end with CRLF")
        };
        let value = parse(text)
            .unwrap_or_else(|e| panic!("bad reply {:?}: {e}", String::from_utf8_lossy(line)));
        let object = value.as_object().unwrap_or_else(|| panic!("not an object: {value}"));
        let ok = if kind == SessionKind::JsonRpc {
            object.contains_key("id")
                && (object.contains_key("result") || object.contains_key("error"))
        } else {
            object.contains_key("return") || object.contains_key("error")
        };
        assert!(ok, "not a reply: {value}");
    }
}

fuzz_target!(|data: &[u8]| {
    let [kind, chunk, stream @ ..] = data else { return };
    if names_a_blocking_command(stream) {
        return;
    }
    let kind = [SessionKind::QmpOob, SessionKind::QmpNegotiating, SessionKind::JsonRpc]
        [usize::from(*kind % 3)];
    let chunk = usize::from(*chunk) + 1;
    PIPELINE.with_borrow_mut(|pipeline| {
        pipeline.restart_session(kind);
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            pipeline.feed_into(piece, &mut out);
        }
        check_replies(kind, &out);
    });
});
