//! The engine's framer and peek as the benchmarks and their tests drive them, straight
//! through `ooblane-wire`'s public API (the same code the parser threads run).

use ooblane_wire::jsonrpc;
use ooblane_wire::peek::Peeker;
use ooblane_wire::qmp::{self, Mode};
use ooblane_wire::reply::Form;
use ooblane_wire::{Framer, Step};

pub use ooblane_wire::peek::PADDING;

/// The largest message the engine accepts by default (`Limits::max_message_bytes`).
const MAX_MESSAGE: usize = 1 << 20;

/// Frames every complete value in `buf` (from its start) and returns how many.
pub fn count_frames(buf: &[u8]) -> usize {
    let mut framer = Framer::new(MAX_MESSAGE);
    let mut frames = 0;
    while let Step::Frame(_) = framer.next(buf) {
        frames += 1;
    }
    frames
}

/// The peek: parse in place with the reused simd-json tape, then classify.
#[derive(Debug, Default)]
pub struct Peek {
    peeker: Peeker,
}

impl Peek {
    /// Peeks a QMP request in `msg[..len]` (followed by [`PADDING`] bytes) as a session with
    /// `oob` negotiated would; returns whether it takes the OOB lane and the length of the
    /// command name, or `None` for an error. Parsing is in place: `msg` is modified.
    pub fn qmp(&mut self, msg: &mut [u8], len: usize) -> Option<(bool, usize)> {
        let tape = self.peeker.parse(msg, len).ok()?;
        let request = qmp::classify(&tape.0, Mode::Commands { oob: true });
        let result = request.target.ok().map(|t| (request.oob, t.name.len()));
        self.peeker.recycle(tape);
        result
    }

    /// Peeks a JSON-RPC request; returns the method name's length, or `None` for an error.
    pub fn jsonrpc(&mut self, msg: &mut [u8], len: usize) -> Option<usize> {
        let tape = self.peeker.parse(msg, len).ok()?;
        let request = jsonrpc::classify(&tape.0, Form::Rpc1);
        let result = request.target.ok().map(|t| t.name.len());
        self.peeker.recycle(tape);
        result
    }
}
