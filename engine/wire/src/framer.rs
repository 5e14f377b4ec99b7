//! Streaming framer: finds where each top-level JSON value starts and ends in a connection's
//! read buffer, by counting `{}`/`[]` outside strings. Runs on the parser thread that owns the
//! connection; public because clients of both dialects need the same splitting (the load
//! generator uses it for replies).
//!
//! It does not validate JSON (simd-json does that on the framed bytes); it only has to agree
//! with any valid JSON on where a value ends, and resynchronise after garbage so that one bad
//! message costs one error. On the way it notes the raw span of a top-level `"id"` member, so
//! the reply can echo the id from its original bytes, and it flags values nested deeper than
//! [`MAX_DEPTH`] or longer than the size limit (whose bytes it lets the owner drop while it
//! scans, so memory stays bounded).
//!
//! Must never allocate or copy: it only moves indices over the caller's buffer.

use std::ops::Range;

/// Deepest nesting accepted, as in QEMU (`MAX_NESTING` in `qobject/json-streamer.c`) and
/// simdjson's default: deeper values are answered with an error, never parsed.
pub const MAX_DEPTH: u32 = 1024;

/// What the framer found next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A complete top-level value.
    Frame(Frame),
    /// A value longer than the size limit ended; its bytes were dropped while scanning.
    TooLarge,
    /// The buffer holds no further complete value; read more.
    Incomplete,
}

/// One complete top-level value in the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Where the value lies in the buffer.
    pub range: Range<usize>,
    /// Raw bytes of the value of a top-level `"id"` member, whitespace included.
    pub id: Option<Range<usize>>,
    /// Nested deeper than [`MAX_DEPTH`]: answer an error without parsing.
    pub too_deep: bool,
}

/// Where the scanner is within the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between values, skipping whitespace.
    Between,
    /// Inside an object or array, outside strings.
    Structure,
    /// Inside a string; `depth` says whether it is top-level.
    String,
    /// Inside a bare top-level token (number, literal or garbage).
    Token,
}

/// The streaming scanner. Offsets are indices into the owner's buffer; when the owner drops
/// consumed bytes from the front it calls [`Framer::shift`].
#[derive(Debug)]
pub struct Framer {
    state: State,
    /// Start of the value being scanned (valid unless `state == Between`).
    start: usize,
    /// Next byte to look at; everything before it has been classified.
    pos: usize,
    /// Open `{`/`[` count of the value being scanned.
    depth: u32,
    /// The previous byte inside the current string was a backslash.
    escaped: bool,
    /// The value being scanned is a top-level object: track its members.
    object: bool,
    /// At depth 1 of an object, the next string is a member key.
    expect_key: bool,
    /// Start of the depth-1 key string being scanned, if any.
    key_start: Option<usize>,
    /// The last depth-1 key was exactly `"id"`.
    key_is_id: bool,
    /// Start of the `id` member's value (just after its colon), while it is being scanned.
    id_from: Option<usize>,
    /// The finished span of the `id` member's value.
    id: Option<Range<usize>>,
    too_deep: bool,
    /// The value being scanned exceeded `max_len`: its bytes are being dropped.
    discarding: bool,
    /// Size limit of one value, in bytes.
    max_len: usize,
}

impl Framer {
    /// A framer that reports values longer than `max_len` bytes as [`Step::TooLarge`].
    pub fn new(max_len: usize) -> Framer {
        Framer {
            state: State::Between,
            start: 0,
            pos: 0,
            depth: 0,
            escaped: false,
            object: false,
            expect_key: false,
            key_start: None,
            key_is_id: false,
            id_from: None,
            id: None,
            too_deep: false,
            discarding: false,
            max_len,
        }
    }

    /// Scans `buf` (the filled part of the read buffer) for the next complete value.
    pub fn next(&mut self, buf: &[u8]) -> Step {
        while self.pos < buf.len() {
            let done = match self.state {
                State::Between => {
                    self.between(buf);
                    false
                }
                State::Structure => self.structure(buf),
                State::String => self.string(buf),
                State::Token => self.token(buf),
            };
            if done {
                return self.finish();
            }
        }
        if self.state != State::Between && self.pos - self.start > self.max_len {
            self.discarding = true;
        }
        Step::Incomplete
    }

    /// Bytes before this index are no longer needed: everything framed so far, and while an
    /// oversized value is being skipped, everything scanned of it.
    pub fn keep_from(&self) -> usize {
        match self.state {
            State::Between => self.pos,
            _ if self.discarding => self.pos,
            _ => self.start,
        }
    }

    /// A value has begun and is not complete yet (bytes of it are buffered, or being
    /// skipped when oversized).
    pub fn is_mid_value(&self) -> bool {
        self.state != State::Between
    }

    /// Forgets everything scanned: the owner emptied its buffer.
    pub fn reset(&mut self) {
        *self = Framer::new(self.max_len);
    }

    /// The owner dropped `n` bytes (at most [`Framer::keep_from`]) from the buffer's front.
    pub fn shift(&mut self, n: usize) {
        let back = |i: usize| i.saturating_sub(n);
        self.pos -= n;
        self.start = back(self.start);
        self.key_start = self.key_start.map(back);
        self.id_from = self.id_from.map(back);
        self.id = self.id.take().map(|r| back(r.start)..back(r.end));
    }

    fn between(&mut self, buf: &[u8]) {
        let byte = buf[self.pos];
        if is_whitespace(byte) {
            self.pos += 1;
            return;
        }
        self.start = self.pos;
        self.depth = 0;
        self.object = byte == b'{';
        self.id = None;
        self.id_from = None;
        self.key_start = None;
        self.key_is_id = false;
        self.too_deep = false;
        self.discarding = false;
        self.state = match byte {
            b'{' | b'[' => State::Structure,
            b'"' => {
                self.pos += 1;
                State::String
            }
            _ => State::Token,
        };
    }

    /// Inside an object or array, outside strings. Returns true when the value ended.
    fn structure(&mut self, buf: &[u8]) -> bool {
        while self.pos < buf.len() {
            let byte = buf[self.pos];
            self.pos += 1;
            match byte {
                b'"' => {
                    if self.depth == 1 && self.expect_key {
                        self.key_start = Some(self.pos - 1);
                    }
                    match skip_string(buf, self.pos, false) {
                        StringEnd::Closed(at) => {
                            self.pos = at + 1;
                            self.end_key(buf);
                        }
                        StringEnd::Broken(at) => {
                            self.pos = at; // as in `string`: the newline ends the message
                            return true;
                        }
                        StringEnd::Open { escaped } => {
                            self.pos = buf.len();
                            self.escaped = escaped;
                            self.state = State::String;
                            return false;
                        }
                    }
                }
                b'{' | b'[' => self.open(),
                b'}' | b']' => {
                    if self.depth == 1 {
                        self.close_id();
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        return true;
                    }
                }
                0xfe | 0xff => {
                    // Never part of valid UTF-8 JSON: the message is broken. End it here, as
                    // QEMU does, instead of waiting forever for a closer that may never come.
                    return true;
                }
                b',' if self.depth == 1 && self.object => {
                    self.close_id();
                    self.expect_key = true;
                }
                b':' if self.depth == 1 && self.object => {
                    if self.key_is_id && self.id.is_none() {
                        self.id_from = Some(self.pos);
                    }
                    self.key_is_id = false;
                }
                _ => {}
            }
        }
        false
    }

    fn open(&mut self) {
        self.depth += 1;
        if self.depth == 1 {
            self.expect_key = self.object;
        } else if self.depth > MAX_DEPTH {
            self.too_deep = true;
        }
    }

    fn close_id(&mut self) {
        if let Some(from) = self.id_from.take() {
            self.id = Some(from..self.pos - 1);
        }
    }

    /// Inside a string (resumed after a read). Returns true when a top-level string ended, or
    /// when a raw newline ended a broken message.
    fn string(&mut self, buf: &[u8]) -> bool {
        match skip_string(buf, self.pos, self.escaped) {
            StringEnd::Open { escaped } => {
                self.pos = buf.len();
                self.escaped = escaped;
                false
            }
            StringEnd::Broken(at) => {
                // A raw newline is never inside a valid string: the message is broken
                // (typically an unterminated string from a line-oriented client). End it here,
                // as QEMU's lexer does, so the next line is a fresh message, not swallowed.
                self.escaped = false;
                self.pos = at;
                true
            }
            StringEnd::Closed(at) => {
                self.escaped = false;
                self.pos = at + 1;
                if self.depth == 0 {
                    return true;
                }
                self.end_key(buf);
                self.state = State::Structure;
                false
            }
        }
    }

    /// After a depth-1 string: if it was a member key, note whether it is `"id"`.
    fn end_key(&mut self, buf: &[u8]) {
        if let Some(key_start) = self.key_start.take() {
            self.key_is_id = &buf[key_start..self.pos] == b"\"id\"";
            self.expect_key = false;
        }
    }

    /// Inside a bare top-level token. Returns true when it ended.
    fn token(&mut self, buf: &[u8]) -> bool {
        if self.pos == self.start && is_structural(buf[self.pos]) {
            // A stray closer, comma or colon is a value of its own: one error, then resync.
            self.pos += 1;
            return true;
        }
        let rest = &buf[self.pos..];
        match rest.iter().position(|&b| is_whitespace(b) || is_structural(b) || b == b'"') {
            Some(len) => {
                self.pos += len;
                true
            }
            None => {
                self.pos = buf.len();
                false
            }
        }
    }

    fn finish(&mut self) -> Step {
        self.state = State::Between;
        self.expect_key = false;
        if self.discarding {
            self.discarding = false;
            return Step::TooLarge;
        }
        if self.pos - self.start > self.max_len {
            return Step::TooLarge;
        }
        Step::Frame(Frame {
            range: self.start..self.pos,
            id: self.id.take(),
            too_deep: self.too_deep,
        })
    }
}

/// Where a string body that starts at `from` (just after its opening quote, or just after a
/// backslash when `escaped`) ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StringEnd {
    /// The closing quote is at this index.
    Closed(usize),
    /// A raw newline at this index breaks the message (never valid inside a string).
    Broken(usize),
    /// The buffer ends inside the string; `escaped` if its last byte was a backslash.
    Open { escaped: bool },
}

/// Skips a string body with `memchr3`, escapes included, without returning to the caller's
/// state machine per escape.
fn skip_string(buf: &[u8], mut from: usize, mut escaped: bool) -> StringEnd {
    loop {
        if escaped {
            if from >= buf.len() {
                return StringEnd::Open { escaped: true };
            }
            from += 1;
        }
        let Some(found) = memchr::memchr3(b'"', b'\\', b'\n', &buf[from..]) else {
            return StringEnd::Open { escaped: false };
        };
        let at = from + found;
        match buf[at] {
            b'"' => return StringEnd::Closed(at),
            b'\n' => return StringEnd::Broken(at),
            _ => {
                from = at + 1;
                escaped = true;
            }
        }
    }
}

/// JSON's insignificant whitespace.
fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_structural(byte: u8) -> bool {
    matches!(byte, b'{' | b'}' | b'[' | b']' | b',' | b':')
}

/// Appends `raw` (a valid JSON value's bytes) to `out` without its insignificant whitespace,
/// so an id spread over several lines still echoes on one line.
pub fn copy_compact(raw: &[u8], out: &mut Vec<u8>) {
    let mut in_string = false;
    let mut escaped = false;
    for &byte in raw {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if byte == b'"' {
            in_string = true;
        } else if is_whitespace(byte) {
            continue;
        }
        out.push(byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames everything in `input`, feeding it in chunks of `chunk` bytes.
    fn frames(input: &[u8], chunk: usize) -> Vec<String> {
        let mut framer = Framer::new(1 << 20);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match framer.next(&buf) {
                    Step::Frame(f) => {
                        let mut text = String::from_utf8_lossy(&buf[f.range.clone()]).into_owned();
                        if let Some(id) = f.id {
                            text.push_str(" id=");
                            text.push_str(&String::from_utf8_lossy(&buf[id]));
                        }
                        out.push(text);
                    }
                    Step::TooLarge => out.push("<too large>".into()),
                    Step::Incomplete => break,
                }
            }
            let keep = framer.keep_from();
            buf.drain(..keep);
            framer.shift(keep);
        }
        out
    }

    #[test]
    fn splits_concatenated_and_separated_values_in_any_chunking() {
        let input = br#"{"execute":"a","id":1}{"execute":"b"}
 [1,{"x":"}"}] "s\"}" 123 true{"id" : {"k":[1, 2]} , "execute":"c"}"#;
        let expected = vec![
            r#"{"execute":"a","id":1} id=1"#.to_string(),
            r#"{"execute":"b"}"#.into(),
            r#"[1,{"x":"}"}]"#.into(),
            r#""s\"}""#.into(),
            "123".into(),
            "true".into(),
            r#"{"id" : {"k":[1, 2]} , "execute":"c"} id= {"k":[1, 2]} "#.into(),
        ];
        for chunk in [1, 2, 3, 7, 1000] {
            assert_eq!(frames(input, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn id_is_only_a_top_level_member_key() {
        let got = frames(br#"{"arguments":{"id":5},"x":"id","id":"a,b}"}"#, 4);
        assert_eq!(got, vec![r#"{"arguments":{"id":5},"x":"id","id":"a,b}"} id="a,b}""#]);
        let got = frames(br#"["id",1]"#, 3);
        assert_eq!(got, vec![r#"["id",1]"#]);
    }

    #[test]
    fn garbage_resynchronises_one_error_per_token() {
        let got = frames(b"abc }{\"a\":1}\x01 ]", 2);
        assert_eq!(got, vec!["abc", "}", r#"{"a":1}"#, "\x01", "]"]);
    }

    #[test]
    fn a_raw_newline_ends_an_unterminated_string_and_the_next_line_is_framed() {
        let got = frames(b"{\"id\":\"oops\r\n{\"id\":2}\n\"ab\ncd\" ", 3);
        // The last `"` opens a string that never closes: still incomplete.
        assert_eq!(got, vec!["{\"id\":\"oops\r", "{\"id\":2} id=2", "\"ab", "cd"]);
    }

    #[test]
    fn a_0xff_byte_ends_an_unfinished_object() {
        let got = frames(b"{\"execute\":\"x\",\xff{\"id\":1}", 4);
        assert_eq!(got, vec!["{\"execute\":\"x\",\u{fffd}", "{\"id\":1} id=1"]);
    }

    #[test]
    fn flags_nesting_beyond_the_limit() {
        let ok = format!("{}{}", "[".repeat(1024), "]".repeat(1024));
        let deep = format!("{}{}", "[".repeat(1025), "]".repeat(1025));
        let mut framer = Framer::new(1 << 20);
        let Step::Frame(f) = framer.next(ok.as_bytes()) else { panic!() };
        assert!(!f.too_deep);
        let mut framer = Framer::new(1 << 20);
        let Step::Frame(f) = framer.next(deep.as_bytes()) else { panic!() };
        assert!(f.too_deep);
    }

    #[test]
    fn oversized_value_is_dropped_while_scanning_then_reported_once() {
        let mut framer = Framer::new(16);
        let mut buf = br#"{"a":"0123456789ABC"#.to_vec();
        assert_eq!(framer.next(&buf), Step::Incomplete);
        let keep = framer.keep_from();
        assert_eq!(keep, buf.len(), "the oversized prefix can be dropped");
        buf.drain(..keep);
        framer.shift(keep);
        buf.extend_from_slice(br#"0123456789"}{"b":1}"#);
        assert_eq!(framer.next(&buf), Step::TooLarge);
        let Step::Frame(f) = framer.next(&buf) else { panic!() };
        assert_eq!(&buf[f.range], br#"{"b":1}"#);
    }

    #[test]
    fn compact_copy_strips_whitespace_outside_strings_only() {
        let mut out = Vec::new();
        copy_compact(b" {\"a b\" :\r\n [1, \"\\\" x\"] } ", &mut out);
        assert_eq!(out, b"{\"a b\":[1,\"\\\" x\"]}");
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::Value;

        use super::frames;

        /// Arbitrary JSON: strings with quotes, backslashes, control and non-ASCII characters;
        /// nested arrays and objects.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                "[a-z\"\\\\{}\\[\\]:, \n\t\u{1}é€😀]{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map("[a-z\"\\\\]{0,6}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// Top-level objects and arrays, compact or pretty, separated by any whitespace (or
            /// none), fed in any chunk size, frame back to exactly themselves.
            #[test]
            fn framing_recovers_every_value_in_any_chunking(
                values in prop::collection::vec(json(), 1..6),
                pretty in any::<bool>(),
                separator in "[ \t\r\n]{0,3}",
                chunk in 1usize..64,
            ) {
                let mut stream = Vec::new();
                let mut expected = Vec::new();
                for value in values {
                    let value = if value.is_object() || value.is_array() { value } else { Value::Array(vec![value]) };
                    let text = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) }.unwrap();
                    stream.extend_from_slice(text.as_bytes());
                    stream.extend_from_slice(separator.as_bytes());
                    expected.push(text);
                }
                let got: Vec<String> = frames(&stream, chunk)
                    .into_iter()
                    .map(|f| f.split(" id=").next().unwrap().to_owned())
                    .collect();
                prop_assert_eq!(got, expected);
            }
        }
    }
}
