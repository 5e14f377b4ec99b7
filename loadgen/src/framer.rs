//! Splits a connection's byte stream into top-level JSON values without parsing them.
//!
//! Needed because servers differ: QMP ends each message with `\r\n`, OVS JSON-RPC sends
//! values back to back with no separator. The splitting itself is the engine's streaming
//! framer (`ooblane_wire::Framer`, counting `{}`/`[]` outside strings); this file owns the read
//! buffer around it and reports any top-level value that is not an object or array as
//! garbage. Owned by one connection on a driver thread; the buffer is reused, so steady state
//! allocates nothing.

use std::io::{self, Read};
use std::ops::Range;

use ooblane_wire::Step;

/// Largest message accepted (replies here are tiny; a server streaming an endless value is
/// broken, and buffering it forever would hide that).
pub(crate) const MAX_FRAME: usize = 16 << 20;

/// Bytes read per `read` call: large enough to take many replies per syscall.
const READ_CHUNK: usize = 64 << 10;

/// One thing found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete top-level value; the range indexes [`Framer::bytes`].
    Value(Range<usize>),
    /// A top-level token that is not an object or array (or a value over the size limit).
    Garbage,
}

/// A connection's read buffer and the engine's streaming framer over it.
#[derive(Debug)]
pub(crate) struct Framer {
    /// Read buffer, zero-filled once and reused; `buf[..end]` holds received bytes.
    buf: Vec<u8>,
    /// End of received bytes in `buf`.
    end: usize,
    splitter: ooblane_wire::Framer,
}

impl Default for Framer {
    fn default() -> Self {
        Framer { buf: Vec::new(), end: 0, splitter: ooblane_wire::Framer::new(MAX_FRAME) }
    }
}

impl Framer {
    /// Reads once from `src` into the buffer; returns the byte count (0 = end of stream).
    pub(crate) fn read_from(&mut self, src: &mut impl Read) -> io::Result<usize> {
        self.compact();
        if self.buf.len() - self.end < READ_CHUNK / 2 {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        let n = src.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Appends bytes directly (tests).
    #[cfg(test)]
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(bytes);
        self.end = self.buf.len();
    }

    /// The bytes a [`Frame::Value`] range refers to (valid until the next read).
    pub(crate) fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Bytes held for an incomplete value.
    pub(crate) fn pending(&self) -> usize {
        self.end - self.splitter.keep_from()
    }

    /// Forgets everything (new session).
    pub(crate) fn reset(&mut self) {
        *self = Framer { buf: std::mem::take(&mut self.buf), ..Framer::default() };
    }

    /// The next complete value or garbage token, if any.
    pub(crate) fn next_frame(&mut self) -> Option<Frame> {
        match self.splitter.next(&self.buf[..self.end]) {
            Step::Frame(frame) if matches!(self.buf[frame.range.start], b'{' | b'[') => {
                Some(Frame::Value(frame.range))
            }
            Step::Frame(_) | Step::TooLarge => Some(Frame::Garbage),
            Step::Incomplete => None,
        }
    }

    /// Drops consumed bytes so the buffer does not grow.
    fn compact(&mut self) {
        let keep = self.splitter.keep_from();
        if keep > 0 {
            self.buf.copy_within(keep..self.end, 0);
            self.end -= keep;
            self.splitter.shift(keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(frame) = f.next_frame() {
            out.push(match frame {
                Frame::Value(r) => String::from_utf8(f.bytes(r).to_vec()).unwrap(),
                Frame::Garbage => "<garbage>".into(),
            });
        }
        out
    }

    #[test]
    fn splits_lines_and_back_to_back_values() {
        let mut f = Framer::default();
        f.push(b"{\"return\": {}}\r\n{\"a\":[1,{\"b\":\"}\"}]}{\"id\":2}\n");
        assert_eq!(
            frames(&mut f),
            vec![r#"{"return": {}}"#, r#"{"a":[1,{"b":"}"}]}"#, r#"{"id":2}"#]
        );
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn values_split_across_reads_and_escaped_quotes() {
        let mut f = Framer::default();
        f.push(br#"{"s":"a\"}"#);
        assert!(frames(&mut f).is_empty());
        f.push(br#"b","x":1}"#);
        assert_eq!(frames(&mut f), vec![r#"{"s":"a\"}b","x":1}"#]);
    }

    #[test]
    fn garbage_is_reported_once_per_token_and_skipped() {
        let mut f = Framer::default();
        f.push(b"oops 42 {\"id\":1} x ");
        assert_eq!(frames(&mut f), vec!["<garbage>", "<garbage>", r#"{"id":1}"#, "<garbage>"]);
    }

    #[test]
    fn reads_from_a_reader() {
        let mut f = Framer::default();
        let mut src: &[u8] = b"[1,2]";
        assert_eq!(f.read_from(&mut src).unwrap(), 5);
        assert_eq!(frames(&mut f), vec!["[1,2]"]);
        assert_eq!(f.read_from(&mut src).unwrap(), 0);
    }
}
