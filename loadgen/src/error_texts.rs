//! What the error replies said: each lane's distinct error texts with their counts, so that
//! a run failing with "852 error replies" also says which errors they were.
//!
//! Filled on the error path only (a successful reply costs nothing more), at most [`KEPT`]
//! distinct texts per run: a server that puts a counter or an id in its error text would
//! otherwise grow this without bound; the error replies past that are counted without text.

use serde::{Deserialize, Serialize};

/// Distinct (lane, text) pairs kept per run.
pub(crate) const KEPT: usize = 16;

/// Longest text kept, in characters; longer ones are cut and end in `…`.
pub(crate) const TEXT_MAX: usize = 160;

/// One distinct error text of one lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorText {
    /// Lane name.
    pub lane: String,
    /// What the reply said: QMP's `class: desc`, JSON-RPC's `error`, an HTTP status and its
    /// body's `error` (at most 160 characters).
    pub text: String,
    /// Error replies with this text.
    pub count: u64,
}

/// The error texts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorTexts {
    /// Distinct texts; most frequent first in a summary.
    pub kept: Vec<ErrorText>,
    /// Error replies whose text was not kept (past 16 distinct texts).
    pub others: u64,
}

impl ErrorTexts {
    /// Counts `count` error replies of `lane` that said `text`.
    pub(crate) fn add(&mut self, lane: &str, text: &str, count: u64) {
        if let Some(kept) = self.kept.iter_mut().find(|e| e.lane == lane && e.text == text) {
            kept.count += count;
        } else if self.kept.len() < KEPT {
            self.kept.push(ErrorText { lane: lane.into(), text: text.into(), count });
        } else {
            self.others += count;
        }
    }

    /// Adds another's texts and counts.
    pub(crate) fn merge(&mut self, other: &ErrorTexts) {
        for e in &other.kept {
            self.add(&e.lane, &e.text, e.count);
        }
        self.others += other.others;
    }

    /// Most frequent first; ties by lane, then text.
    pub(crate) fn sorted(mut self) -> ErrorTexts {
        self.kept.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.lane.cmp(&b.lane))
                .then_with(|| a.text.cmp(&b.text))
        });
        self
    }

    /// True when no error reply was counted.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.others == 0
    }
}

/// `text` cut to [`TEXT_MAX`] characters, `…` marking the cut.
pub(crate) fn shortened(text: &str) -> String {
    match text.char_indices().nth(TEXT_MAX) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_lane_and_text_apart_and_the_rest_without_text() {
        assert_eq!((KEPT, TEXT_MAX), (16, 160), "the public docs and the README give both");
        let mut e = ErrorTexts::default();
        e.add("add", "GenericError: not executed", 1);
        e.add("read", "GenericError: not executed", 1);
        e.add("add", "GenericError: not executed", 2);
        assert_eq!(e.kept.len(), 2);
        assert_eq!(e.kept[0].count, 3);
        for i in 0..KEPT {
            e.add("add", &format!("error {i}"), 1);
        }
        assert_eq!(e.kept.len(), KEPT);
        assert_eq!(e.others, 2, "the texts past the kept ones are counted, not kept");
        e.add("read", "GenericError: not executed", 5);
        assert_eq!(e.kept[1].count, 6, "a kept text still counts once the list is full");
    }

    #[test]
    fn merging_adds_counts_and_sorting_puts_the_most_frequent_first() {
        let mut a = ErrorTexts::default();
        a.add("add", "x", 1);
        let mut b = ErrorTexts::default();
        b.add("read", "y", 4);
        b.add("add", "x", 2);
        b.others = 7;
        a.merge(&b);
        let a = a.sorted();
        let counts: Vec<(&str, u64)> = a.kept.iter().map(|e| (e.lane.as_str(), e.count)).collect();
        assert_eq!(counts, vec![("read", 4), ("add", 3)]);
        assert_eq!(a.others, 7);
        assert!(!a.is_empty() && ErrorTexts::default().is_empty());
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        assert_eq!(shortened("short"), "short");
        let long = "é".repeat(TEXT_MAX + 5);
        let cut = shortened(&long);
        assert_eq!(cut.chars().count(), TEXT_MAX + 1);
        assert!(cut.ends_with('…'));
    }
}
