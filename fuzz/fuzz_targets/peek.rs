//! The peek and classification of both dialects (`Peek::qmp`, `Peek::jsonrpc`): simd-json in
//! place on the reused tape, duplicate-key check, QMP and JSON-RPC classification. Any bytes:
//! never panics, and a command name is never longer than the message.

#![no_main]

use ooblane::internals::{PADDING, Peek};
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// Reused across inputs, as a parser thread reuses its tape (stale state would show).
    static PEEK: std::cell::RefCell<Peek> = std::cell::RefCell::new(Peek::default());
}

fuzz_target!(|data: &[u8]| {
    PEEK.with_borrow_mut(|peek| {
        let mut msg = data.to_vec();
        msg.resize(data.len() + PADDING, 0);
        if let Some((_oob, name)) = peek.qmp(&mut msg, data.len()) {
            assert!(name <= data.len());
        }
        // Parsing is in place: start again from the original bytes.
        msg[..data.len()].copy_from_slice(data);
        if let Some(name) = peek.jsonrpc(&mut msg, data.len()) {
            assert!(name <= data.len());
        }
    });
});
