//! Splits a connection's byte stream into messages without parsing them: top-level JSON
//! values, or HTTP/1.1 responses for etcd's gateway.
//!
//! Needed because servers differ: QMP ends each message with `\r\n`, OVS JSON-RPC sends
//! values back to back with no separator, etcd's gateway frames each reply with HTTP headers.
//! The JSON splitting is the engine's streaming framer (`ooblane_wire::Framer`, counting `{}`/`[]`
//! outside strings), the HTTP one [`http::Splitter`]; this file owns the read buffer around
//! them and reports any top-level JSON value that is not an object or array as garbage.
//! Owned by one connection on a driver thread; the buffer is reused, so steady state
//! allocates nothing.

use std::io::{self, Read};
use std::ops::Range;

use ooblane_wire::Step;

use crate::config::Protocol;
use crate::http;

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
    /// An HTTP response; `body` indexes [`Framer::bytes`].
    Response {
        /// Its status code.
        status: u16,
        /// Its body.
        body: Range<usize>,
    },
    /// A top-level token that is not an object or array (or a value over the size limit).
    Garbage,
    /// HTTP bytes that cannot be framed: the stream cannot be resynchronised.
    Unframable(&'static str),
}

/// How the stream is cut into messages.
#[derive(Debug)]
enum Splitter {
    Json(ooblane_wire::Framer),
    Http(http::Splitter),
}

impl Splitter {
    fn keep_from(&self) -> usize {
        match self {
            Splitter::Json(s) => s.keep_from(),
            Splitter::Http(s) => s.keep_from(),
        }
    }

    fn shift(&mut self, n: usize) {
        match self {
            Splitter::Json(s) => s.shift(n),
            Splitter::Http(s) => s.shift(n),
        }
    }
}

/// A connection's read buffer and the splitter over it.
#[derive(Debug)]
pub(crate) struct Framer {
    /// Read buffer, zero-filled once and reused; `buf[..end]` holds received bytes.
    buf: Vec<u8>,
    /// End of received bytes in `buf`.
    end: usize,
    splitter: Splitter,
}

impl Default for Framer {
    /// A JSON framer.
    fn default() -> Self {
        Framer::new(Protocol::Qmp)
    }
}

impl Framer {
    /// A framer for the messages `protocol`'s servers send.
    pub(crate) fn new(protocol: Protocol) -> Framer {
        let splitter = match protocol {
            Protocol::Etcd => Splitter::Http(http::Splitter::new(MAX_FRAME)),
            Protocol::Qmp | Protocol::JsonRpc | Protocol::Echo => {
                Splitter::Json(ooblane_wire::Framer::new(MAX_FRAME))
            }
        };
        Framer { buf: Vec::new(), end: 0, splitter }
    }

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
        self.end = 0;
        self.splitter = match &self.splitter {
            Splitter::Json(_) => Splitter::Json(ooblane_wire::Framer::new(MAX_FRAME)),
            Splitter::Http(_) => Splitter::Http(http::Splitter::new(MAX_FRAME)),
        };
    }

    /// The next complete message or garbage token, if any.
    pub(crate) fn next_frame(&mut self) -> Option<Frame> {
        let received = &self.buf[..self.end];
        match &mut self.splitter {
            Splitter::Json(json) => match json.next(received) {
                Step::Frame(frame) if matches!(received[frame.range.start], b'{' | b'[') => {
                    Some(Frame::Value(frame.range))
                }
                Step::Frame(_) | Step::TooLarge => Some(Frame::Garbage),
                Step::Incomplete => None,
            },
            Splitter::Http(http) => match http.next(received) {
                http::Step::Response { status, body } => Some(Frame::Response { status, body }),
                http::Step::Incomplete => None,
                http::Step::Bad(why) => Some(Frame::Unframable(why)),
            },
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
                Frame::Response { status, body } => {
                    format!("{status} {}", String::from_utf8(f.bytes(body).to_vec()).unwrap())
                }
                Frame::Garbage => "<garbage>".into(),
                Frame::Unframable(why) => format!("<unframable: {why}>"),
            });
            if out.last().is_some_and(|l| l.starts_with("<unframable")) {
                break;
            }
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
    fn http_responses_across_reads_and_compaction() {
        let mut f = Framer::new(Protocol::Etcd);
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        f.push(&response[..30]);
        assert!(frames(&mut f).is_empty());
        f.push(&[&response[30..], &response[..]].concat());
        assert_eq!(frames(&mut f), vec!["200 {}", "200 {}"]);
        assert_eq!(f.pending(), 0);
        f.push(b"{\"not\":\"http\"}\r\n\r\n");
        assert_eq!(frames(&mut f), vec!["<unframable: not an HTTP/1.x status line>"]);
        f.reset();
        f.push(response);
        assert_eq!(frames(&mut f), vec!["200 {}"], "a new session starts clean");
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
