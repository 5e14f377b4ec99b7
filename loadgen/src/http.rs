//! Splits a connection's byte stream into HTTP/1.1 responses: etcd's JSON gateway.
//!
//! A response is a status line, header lines, an empty line and a body of exactly
//! `Content-Length` bytes. Only what a JSON gateway sends on a keep-alive connection is
//! accepted: a body framed by `Content-Length` (Go's `net/http` sets it for every small
//! reply), or no body for the statuses that never have one (1xx, 204, 304). A chunked body or
//! one ended by closing the connection cannot be framed here, and says so ([`Step::Bad`]):
//! the connection is dropped and counted, never guessed at. Owned by one connection's
//! [`Framer`](crate::framer::Framer) on a driver thread; no allocation, no logging.

use std::ops::Range;

/// Longest status line plus headers accepted: etcd's are about 350 bytes; a server sending
/// more without ending them is not speaking HTTP to us.
const MAX_HEAD: usize = 64 << 10;

/// What the next bytes of the stream hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A complete response; `body` indexes the buffer given to [`Splitter::next`].
    Response {
        /// The status code (`200`).
        status: u16,
        /// Where its body lies.
        body: Range<usize>,
    },
    /// Not a whole response yet.
    Incomplete,
    /// Bytes that cannot be framed (not HTTP/1.x, chunked, no length, too large): the
    /// stream cannot be resynchronised.
    Bad(&'static str),
}

/// Position of the next response in a connection's buffer.
#[derive(Debug)]
pub(crate) struct Splitter {
    /// Offset of the first byte not yet handed out as part of a response.
    start: usize,
    /// Largest body accepted.
    max_body: usize,
}

impl Splitter {
    /// A splitter that accepts bodies up to `max_body` bytes.
    pub(crate) fn new(max_body: usize) -> Splitter {
        Splitter { start: 0, max_body }
    }

    /// The next response in `buf[self.start..]`, if complete.
    pub(crate) fn next(&mut self, buf: &[u8]) -> Step {
        let rest = &buf[self.start..];
        let Some(head_len) = find_head_end(rest) else {
            return if rest.len() > MAX_HEAD {
                Step::Bad("headers too long")
            } else {
                Step::Incomplete
            };
        };
        let head = match parse_head(&rest[..head_len]) {
            Ok(head) => head,
            Err(why) => return Step::Bad(why),
        };
        if head.length > self.max_body {
            return Step::Bad("body too large");
        }
        let body = self.start + head_len..self.start + head_len + head.length;
        if body.end > buf.len() {
            return Step::Incomplete;
        }
        self.start = body.end;
        Step::Response { status: head.status, body }
    }

    /// Bytes before this offset have been handed out and may be discarded.
    pub(crate) fn keep_from(&self) -> usize {
        self.start
    }

    /// The caller discarded the first `n` bytes of the buffer.
    pub(crate) fn shift(&mut self, n: usize) {
        self.start -= n;
    }
}

/// The parts of a response head that frame it.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    length: usize,
}

/// Length of the head including its final empty line, if all of it is there.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses the status line and the framing headers.
fn parse_head(head: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status = parse_status(lines.next().unwrap_or_default())?;
    let mut length = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or("header line without ':'")?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(
                "Transfer-Encoding (chunked body): only Content-Length framing is supported",
            );
        }
        if name.eq_ignore_ascii_case("content-length") {
            let n = value.trim().parse::<usize>().map_err(|_| "bad Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers");
            }
            length = Some(n);
        }
    }
    match (length, status) {
        (Some(length), _) => Ok(Head { status, length }),
        (None, 100..=199 | 204 | 304) => Ok(Head { status, length: 0 }),
        (None, _) => Err("no Content-Length: a body ended by close cannot be framed"),
    }
}

/// The code of an `HTTP/1.x NNN reason` status line.
fn parse_status(line: &str) -> Result<u16, &'static str> {
    let rest = line.strip_prefix("HTTP/1.").ok_or("not an HTTP/1.x status line")?;
    let bytes = rest.as_bytes();
    let framed = bytes.get(1) == Some(&b' ') && matches!(bytes.get(5), None | Some(b' '));
    let code = rest.get(2..5).filter(|_| framed).and_then(|c| c.parse::<u16>().ok());
    code.filter(|c| (100..=999).contains(c)).ok_or("bad status code")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
        Content-Length: 13\r\n\r\n{\"header\":{}}";

    fn all(s: &mut Splitter, buf: &[u8]) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        while let Step::Response { status, body } = s.next(buf) {
            out.push((status, String::from_utf8(buf[body].to_vec()).unwrap()));
        }
        out
    }

    #[test]
    fn splits_back_to_back_responses_and_waits_for_the_rest() {
        let mut buf =
            [OK, b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}"].concat();
        let mut s = Splitter::new(1 << 20);
        let whole = buf.len();
        buf.extend_from_slice(&OK[..20]);
        assert_eq!(all(&mut s, &buf), vec![(200, "{\"header\":{}}".into()), (503, "{}".into())]);
        assert_eq!((s.next(&buf), s.keep_from()), (Step::Incomplete, whole));
        buf.truncate(whole - 1);
        let mut s = Splitter::new(1 << 20);
        assert_eq!(all(&mut s, &buf).len(), 1, "the second body lacks a byte");
        assert_eq!(s.next(&buf), Step::Incomplete);
    }

    #[test]
    fn shift_follows_the_callers_compaction() {
        let buf = [OK, OK].concat();
        let mut s = Splitter::new(1 << 20);
        assert!(matches!(s.next(&buf), Step::Response { .. }));
        let n = s.keep_from();
        s.shift(n);
        assert_eq!(all(&mut s, &buf[n..]), vec![(200, "{\"header\":{}}".into())]);
    }

    #[test]
    fn bodiless_statuses_need_no_length() {
        let mut s = Splitter::new(16);
        let buf = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(all(&mut s, buf), vec![(204, String::new())]);
    }

    #[test]
    fn what_cannot_be_framed_is_bad() {
        let bad = |bytes: &[u8]| Splitter::new(16).next(bytes);
        assert!(
            matches!(bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), Step::Bad(w) if w.contains("chunked"))
        );
        assert!(
            matches!(bad(b"HTTP/1.1 200 OK\r\n\r\n{}"), Step::Bad(w) if w.contains("Content-Length"))
        );
        assert!(matches!(
            bad(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n"),
            Step::Bad("body too large")
        ));
        assert!(
            matches!(bad(b"{\"return\":{}}\r\n\r\n"), Step::Bad(w) if w.contains("status line"))
        );
        assert!(matches!(bad(b"HTTP/1.1 2000 OK\r\n\r\n"), Step::Bad("bad status code")));
        assert!(matches!(
            bad(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Step::Bad("bad Content-Length")
        ));
        assert_eq!(bad(b"HTTP/1.1 200 OK\r\nContent-"), Step::Incomplete);
        assert_eq!(bad(&vec![b'a'; MAX_HEAD + 1]), Step::Bad("headers too long"));
    }
}
