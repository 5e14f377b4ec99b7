//! Zero-copy peek: parses one framed message in place with simd-json into a reused tape and
//! reads the top-level members straight off the tape, borrowing every string from the read
//! buffer. Runs on the parser thread; one `Peeker` per thread.
//!
//! Steady state allocates nothing: `Buffers`, the tape and the argument tape are reused, and
//! the input is parsed where it lies (`fill_tape_padded`, so not even the padded copy that
//! `fill_tape` makes). Argument decoding into the command's owned, typed value also runs here
//! (serde over a tape slice), never on the executor.

use serde::de::DeserializeOwned;
use simd_json::{Buffers, Deserializer, Node, Tape};

use crate::framer::MAX_DEPTH;

/// Bytes that must follow a message in its buffer for simd-json's SIMD loads.
pub const PADDING: usize = simd_json::INPUT_PADDING;

/// The empty object, used as the arguments of a request that has none.
const EMPTY_OBJECT: [Node<'static>; 1] = [Node::Object { len: 0, count: 0 }];

/// Why a message is not a parsable JSON value (always answered without an `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// simd-json rejected the bytes (syntax, invalid UTF-8, control characters...).
    Syntax(String),
    /// The same key twice in one object: QEMU rejects it and an ambiguous request must never run.
    DuplicateKey(String),
}

impl Malformed {
    /// The `desc` of the error reply.
    pub fn describe(&self) -> String {
        match self {
            Malformed::Syntax(why) => format!("JSON parse error, {why}"),
            Malformed::DuplicateKey(key) => format!("JSON parse error, duplicate key '{key}'"),
        }
    }
}

/// Reusable parse state of one parser thread.
pub struct Peeker {
    buffers: Buffers,
    /// The message tape, kept between messages (empty, lifetime reset).
    spare: Option<Tape<'static>>,
    /// The tape that argument decoding consumes and hands back.
    args_spare: Option<Tape<'static>>,
}

impl std::fmt::Debug for Peeker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peeker").finish_non_exhaustive()
    }
}

impl Default for Peeker {
    fn default() -> Self {
        Peeker {
            buffers: Buffers::with_max_depth(4096, MAX_DEPTH as usize + 1),
            spare: Some(Tape::null().reset()),
            args_spare: Some(Tape::null().reset()),
        }
    }
}

impl Peeker {
    /// Parses `input[..len]` in place (`input[len..]` is at least [`PADDING`] bytes of the
    /// buffer that follows). Hand the tape back with [`Peeker::recycle`].
    pub fn parse<'a>(&mut self, input: &'a mut [u8], len: usize) -> Result<Tape<'a>, Malformed> {
        let mut tape = self.spare.take().map_or_else(|| Tape::null().reset(), Tape::reset);
        if let Err(e) = simd_json::fill_tape_padded(input, len, &mut self.buffers, &mut tape) {
            self.recycle(tape);
            return Err(Malformed::Syntax(describe_syntax(&e)));
        }
        if let Some(key) = find_duplicate_key(&tape.0) {
            let key = key.to_owned();
            self.recycle(tape);
            return Err(Malformed::DuplicateKey(key));
        }
        Ok(tape)
    }

    /// Returns a tape's allocation for the next message.
    pub fn recycle(&mut self, tape: Tape<'_>) {
        self.spare = Some(tape.reset());
    }

    /// Decodes a value (normally a request's `arguments`) into an owned, typed value.
    /// `None` decodes from `{}`, so commands whose arguments are all optional accept none.
    pub fn decode<T: DeserializeOwned>(&mut self, nodes: Option<&[Node<'_>]>) -> Result<T, String> {
        let mut tape = self.args_spare.take().map_or_else(|| Tape::null().reset(), Tape::reset);
        tape.0.extend_from_slice(nodes.unwrap_or(&EMPTY_OBJECT));
        let mut de = Deserializer::from_tape(tape);
        let result = T::deserialize(&mut de).map_err(|e| describe_args(&e));
        self.args_spare = Some(de.into_tape().reset());
        result
    }
}

/// Nodes a value occupies on the tape, itself included.
fn node_span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

/// The members of the object at the start of `nodes`, as `(key, value nodes)`, in input order.
/// Empty if `nodes` does not start with an object.
pub fn members<'t, 'i>(
    nodes: &'t [Node<'i>],
) -> impl Iterator<Item = (&'i str, &'t [Node<'i>])> + 't {
    let len = match nodes.first() {
        Some(Node::Object { len, .. }) => *len,
        _ => 0,
    };
    let mut at = 1;
    (0..len).filter_map(move |_| {
        let Node::String(key) = nodes.get(at)? else { return None };
        let value_at = at + 1;
        let span = node_span(nodes.get(value_at)?);
        at = value_at + span;
        Some((*key, &nodes[value_at..value_at + span]))
    })
}

/// The first key that appears twice in any one object of the tape.
fn find_duplicate_key<'i>(nodes: &[Node<'i>]) -> Option<&'i str> {
    /// Objects up to this many keys are checked pairwise without allocating; larger ones
    /// (rare in commands) are sorted in a temporary vector.
    const PAIRWISE: usize = 16;
    for (at, node) in nodes.iter().enumerate() {
        let Node::Object { len, .. } = node else { continue };
        if *len < 2 {
            continue;
        }
        let keys = members(&nodes[at..]).map(|(k, _)| k);
        if *len <= PAIRWISE {
            let mut seen: [&str; PAIRWISE] = [""; PAIRWISE];
            for (i, key) in keys.enumerate() {
                if seen[..i].contains(&key) {
                    return Some(key);
                }
                seen[i] = key;
            }
        } else {
            let mut sorted: Vec<&str> = keys.collect();
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Some(pair[0]);
            }
        }
    }
    None
}

/// The string a value node holds, if it is a string.
pub fn as_str<'i>(nodes: &[Node<'i>]) -> Option<&'i str> {
    match nodes.first() {
        Some(Node::String(s)) => Some(s),
        _ => None,
    }
}

/// Whether a value is an object.
pub fn is_object(nodes: &[Node<'_>]) -> bool {
    matches!(nodes.first(), Some(Node::Object { .. }))
}

fn describe_syntax(e: &simd_json::Error) -> String {
    use simd_json::ErrorType as E;
    let what = match e.error() {
        E::InvalidUtf8 => "invalid UTF-8",
        E::UnterminatedString => "unterminated string",
        E::InvalidEscape | E::InvalidUnicodeEscape | E::InvalidUnicodeCodepoint => {
            "invalid escape in string"
        }
        E::InvalidNumber | E::InvalidExponent | E::Overflow => "invalid number",
        E::DepthLimitExceeded => "nesting too deep",
        E::KeyMustBeAString | E::ExpectedObjectKey => "object key must be a string",
        E::Eof => "unexpected end of input",
        _ => "invalid JSON",
    };
    format!("{what} at byte {}", e.index())
}

/// Turns serde's messages into QEMU's wording where the two say the same thing.
fn describe_args(e: &simd_json::Error) -> String {
    use simd_json::ErrorType as E;
    let expected = match e.error() {
        E::Serde(_) => None,
        E::ExpectedUnsigned => Some("unsigned integer"),
        E::ExpectedSigned | E::ExpectedInteger => Some("integer"),
        E::ExpectedFloat | E::ExpectedNumber => Some("number"),
        E::ExpectedString => Some("string"),
        E::ExpectedBoolean => Some("boolean"),
        E::ExpectedMap => Some("object"),
        E::ExpectedArray => Some("array"),
        E::ExpectedNull => Some("null"),
        _ => Some("a value of another type"),
    };
    if let Some(expected) = expected {
        return format!("Invalid parameter type, expected: {expected}");
    }
    let E::Serde(msg) = e.error() else { unreachable!("handled above") };
    let quoted = |s: &str| s.split('`').nth(1).map(str::to_owned);
    if let Some(field) = msg.strip_prefix("missing field ").and_then(quoted) {
        return format!("Parameter '{field}' is missing");
    }
    if let Some(field) = msg.strip_prefix("unknown field ").and_then(quoted) {
        return format!("Parameter '{field}' is unexpected");
    }
    format!("Invalid parameter: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn padded(text: &str) -> (Vec<u8>, usize) {
        let mut buf = text.as_bytes().to_vec();
        buf.resize(text.len() + PADDING, 0);
        (buf, text.len())
    }

    #[test]
    fn reads_members_in_order_with_nested_values() {
        let mut peeker = Peeker::default();
        let (mut buf, len) = padded(r#"{"execute":"x","arguments":{"a":[1,{"b":2}]},"id":[3]}"#);
        let tape = peeker.parse(&mut buf, len).unwrap();
        let found: Vec<(&str, usize)> = members(&tape.0).map(|(k, v)| (k, v.len())).collect();
        assert_eq!(found, vec![("execute", 1), ("arguments", 7), ("id", 2)]);
        peeker.recycle(tape);
    }

    #[test]
    fn rejects_duplicates_at_any_depth_and_bad_syntax() {
        let mut peeker = Peeker::default();
        for (text, want) in [
            (r#"{"a":1,"a":2}"#, Malformed::DuplicateKey("a".into())),
            (r#"{"x":{"k":1,"j":2,"k":3}}"#, Malformed::DuplicateKey("k".into())),
        ] {
            let (mut buf, len) = padded(text);
            assert_eq!(peeker.parse(&mut buf, len).unwrap_err(), want);
        }
        for text in [r#"{"a":}"#, "{\"a\":\"\u{1}\"}", "abc"] {
            let (mut buf, len) = padded(text);
            assert!(matches!(peeker.parse(&mut buf, len), Err(Malformed::Syntax(_))), "{text}");
        }
        let (mut buf, len) = padded("{\"a\":\"\u{1}\"}");
        buf[6] = 0xff;
        assert!(peeker.parse(&mut buf, len).unwrap_err().describe().contains("UTF-8"));
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Args {
        us: u64,
        name: Option<String>,
    }

    #[test]
    fn decodes_typed_arguments_with_qemu_wording_for_errors() {
        let mut peeker = Peeker::default();
        let (mut buf, len) = padded(r#"{"arguments":{"us":5,"name":"a\"b"}}"#);
        let tape = peeker.parse(&mut buf, len).unwrap();
        let (_, args) = members(&tape.0).next().unwrap();
        let args: Args = peeker.decode(Some(args)).unwrap();
        assert_eq!(args, Args { us: 5, name: Some("a\"b".into()) });
        peeker.recycle(tape);

        let missing = peeker.decode::<Args>(None).unwrap_err();
        assert_eq!(missing, "Parameter 'us' is missing");
        let (mut buf, len) = padded(r#"{"us":1,"zz":2}"#);
        let tape = peeker.parse(&mut buf, len).unwrap();
        assert_eq!(
            peeker.decode::<Args>(Some(&tape.0)).unwrap_err(),
            "Parameter 'zz' is unexpected"
        );
    }

    /// Found by the differential fuzz target (fuzz/fuzz_targets/differential.rs): simd-json's
    /// `max_depth` of `MAX_DEPTH + 1` lets the peek alone take one level more than
    /// `MAX_DEPTH`. The engine's limit holds because the framer flags such a value as too deep
    /// before the peek runs; this pins both halves so neither drifts unnoticed.
    #[test]
    fn the_framer_not_the_peek_enforces_max_depth() {
        let nested = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
        let mut peeker = Peeker::default();
        for (depth, parses) in [(1025, true), (1026, false)] {
            let (mut buf, len) = padded(&nested(depth));
            let result = peeker.parse(&mut buf, len).map(|tape| peeker.recycle(tape));
            assert_eq!(result.is_ok(), parses, "depth {depth}");
        }
        let mut framer = crate::framer::Framer::new(1 << 20);
        let crate::framer::Step::Frame(frame) = framer.next(nested(1025).as_bytes()) else {
            panic!("a complete value")
        };
        assert!(frame.too_deep);
    }
}
