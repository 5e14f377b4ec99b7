//! The peek and classification of both dialects (`ooblane_wire::peek::Peeker`, then
//! `qmp::classify` and `jsonrpc::classify`): simd-json in place on the reused tape,
//! duplicate-key check, QMP and JSON-RPC classification. Any bytes: never panics, and a
//! command name is never longer than the message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ooblane_wire::jsonrpc;
use ooblane_wire::peek::{PADDING, Peeker};
use ooblane_wire::qmp::{self, Mode};
use ooblane_wire::reply::Form;

thread_local! {
    /// Reused across inputs, as a parser thread reuses its tape (stale state would show).
    static PEEKER: std::cell::RefCell<Peeker> = std::cell::RefCell::new(Peeker::default());
}

/// Parses `msg[..len]` in place and checks what each dialect's classification names.
fn peek(peeker: &mut Peeker, msg: &mut [u8], len: usize, dialect: Form) {
    let Ok(tape) = peeker.parse(msg, len) else { return };
    let name = match dialect {
        Form::Qmp => qmp::classify(&tape.0, Mode::Commands { oob: true }).target.map(|t| t.name.len()),
        _ => jsonrpc::classify(&tape.0, dialect).target.map(|t| t.name.len()),
    };
    if let Ok(name) = name {
        assert!(name <= len);
    }
    peeker.recycle(tape);
}

fuzz_target!(|data: &[u8]| {
    PEEKER.with_borrow_mut(|peeker| {
        let mut msg = data.to_vec();
        msg.resize(data.len() + PADDING, 0);
        peek(peeker, &mut msg, data.len(), Form::Qmp);
        // Parsing is in place: start again from the original bytes.
        msg[..data.len()].copy_from_slice(data);
        peek(peeker, &mut msg, data.len(), Form::Rpc1);
    });
});
