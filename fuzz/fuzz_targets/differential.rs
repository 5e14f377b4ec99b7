//! Differential: the peek's parse (`Peeker::parse`: simd-json in place plus the duplicate-key
//! check) accepts exactly what a full `serde_json` parse that rejects a repeated key in any
//! object accepts. Each deliberate difference is listed in `expected` with its reason; none
//! is allowed silently.

#![no_main]

use std::collections::HashSet;
use std::fmt;

use ooblane_wire::MAX_DEPTH;
use ooblane_wire::peek::{PADDING, Peeker};
use libfuzzer_sys::fuzz_target;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Nesting beyond which the reference is not run (its recursion would need a deep stack):
/// the peek must reject such input whether or not it is valid JSON.
const REFERENCE_DEPTH: u32 = MAX_DEPTH + 8;

/// A JSON value, checked for repeated keys at every depth, remembered by its nesting depth.
struct Strict(u32);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict(0))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict(0))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict(0))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict(0))
    }
    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict(0))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut depth = 0;
        while let Some(Strict(d)) = seq.next_element()? {
            depth = depth.max(d);
        }
        Ok(Strict(depth + 1))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut keys = HashSet::new();
        let mut depth = 0;
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let Strict(d) = map.next_value()?;
            depth = depth.max(d);
        }
        Ok(Strict(depth + 1))
    }
}

/// Deepest `[`/`{` nesting outside strings (exact for valid JSON).
fn scan_depth(data: &[u8]) -> u32 {
    let (mut depth, mut max, mut in_string, mut escaped) = (0u32, 0u32, false, false);
    for &b in data {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    max
}

/// The reference: serde_json, whole input, trailing whitespace only, no recursion limit.
fn reference(data: &[u8]) -> Result<u32, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(data);
    de.disable_recursion_limit();
    let Strict(depth) = Strict::deserialize(&mut de)?;
    de.end()?;
    Ok(depth)
}

/// What the peek must answer, given the reference's verdict.
fn expected(reference: &Result<u32, serde_json::Error>) -> bool {
    match reference {
        // Deliberate: nesting is limited (as QEMU and simdjson do); serde_json without its
        // recursion limit has none. The engine's limit is MAX_DEPTH, enforced by the framer
        // (`Frame::too_deep`) before the peek ever runs; the peek's own simd-json bound is
        // one level looser (`max_depth` MAX_DEPTH + 1 in peek.rs), found by this target: a
        // 1025-deep value passes the peek alone and is refused by the framer in the engine.
        Ok(depth) => *depth <= MAX_DEPTH + 1,
        Err(_) => false,
    }
}

thread_local! {
    static PEEKER: std::cell::RefCell<Peeker> = std::cell::RefCell::new(Peeker::default());
}

/// Whether the peek's parse (before any classification) accepts `msg[..len]` as one JSON
/// value without duplicate keys. Modifies `msg`.
fn accepts(peeker: &mut Peeker, msg: &mut [u8], len: usize) -> bool {
    match peeker.parse(msg, len) {
        Ok(tape) => {
            peeker.recycle(tape);
            true
        }
        Err(_) => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut msg = data.to_vec();
    msg.resize(data.len() + PADDING, 0);
    let accepted = PEEKER.with_borrow_mut(|peeker| accepts(peeker, &mut msg, data.len()));
    if scan_depth(data) > REFERENCE_DEPTH {
        assert!(!accepted, "the peek accepted nesting beyond {REFERENCE_DEPTH}");
        return;
    }
    let reference = reference(data);
    assert_eq!(
        accepted,
        expected(&reference),
        "peek and serde_json disagree on {:?}: serde_json says {:?}",
        String::from_utf8_lossy(data),
        reference.as_ref().map_err(ToString::to_string),
    );
});
