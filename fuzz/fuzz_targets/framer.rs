//! The framer (`ooblane_wire::Framer`) over any bytes in any chunking: it never panics, every
//! frame lies inside the input, after the previous one, with its `id` span inside it, and
//! (property) framing the frames again, one per line, gives exactly the same frames.
//!
//! Input: byte 0 picks the chunk size, byte 1 the size limit (small limits exercise the
//! oversized-value path), the rest is the stream.

#![no_main]

use ooblane_wire::{Framer, Step};
use libfuzzer_sys::fuzz_target;

/// A frame as found: its bytes, the id span relative to its start, the depth flag.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    bytes: Vec<u8>,
    id: Option<(usize, usize)>,
    too_deep: bool,
}

/// Frames `stream` fed `chunk` bytes at a time into a buffer that drops consumed bytes from
/// its front, as a connection's read buffer does. `None` stands for a `TooLarge`.
fn frame_all(stream: &[u8], chunk: usize, max_len: usize) -> Vec<Option<Found>> {
    let mut framer = Framer::new(max_len);
    let mut buf = Vec::new();
    // Stream offset of `buf[0]`, and where the previous frame ended.
    let mut base = 0;
    let mut last_end = 0;
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match framer.next(&buf) {
                Step::Frame(f) => {
                    let (start, end) = (base + f.range.start, base + f.range.end);
                    assert!(
                        start >= last_end && start < end,
                        "frame {start}..{end} after {last_end}"
                    );
                    assert!(end <= base + buf.len(), "frame past the bytes read");
                    last_end = end;
                    let id = f.id.map(|id| {
                        assert!(
                            f.range.start <= id.start
                                && id.start <= id.end
                                && id.end <= f.range.end
                        );
                        (id.start - f.range.start, id.end - f.range.start)
                    });
                    out.push(Some(Found {
                        bytes: buf[f.range].to_vec(),
                        id,
                        too_deep: f.too_deep,
                    }));
                }
                Step::TooLarge => out.push(None),
                Step::Incomplete => break,
            }
        }
        let keep = framer.keep_from();
        assert!(keep <= buf.len());
        buf.drain(..keep);
        framer.shift(keep);
        base += keep;
        // A value being dropped while scanned must not hold more than its limit plus a read.
        assert!(buf.len() <= max_len + chunk + 1, "buffer {} over the limit {max_len}", buf.len());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [chunk, limit, stream @ ..] = data else { return };
    let chunk = usize::from(*chunk) + 1;
    let max_len = 16 + usize::from(*limit) * 64;
    let found = frame_all(stream, chunk, max_len);

    // Re-framing: each frame on its own line. A newline ends any frame (a token at its
    // whitespace, a string broken by it), so the frames must come back unchanged.
    let frames: Vec<&Found> = found.iter().flatten().collect();
    let mut again = Vec::new();
    for f in &frames {
        again.extend_from_slice(&f.bytes);
        again.push(b'\n');
    }
    let refound = frame_all(&again, again.len().max(1), max_len);
    let refound: Vec<&Found> =
        refound.iter().map(|f| f.as_ref().expect("a frame fits its limit")).collect();
    assert_eq!(refound, frames, "re-framing changed the frames");
});
