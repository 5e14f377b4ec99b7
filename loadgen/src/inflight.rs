//! Requests awaiting a reply on one session, indexed by id.
//!
//! Ids on a connection are consecutive, so a sliding window (`VecDeque` of slots starting at
//! the oldest unanswered id) replaces a hash map: insert and lookup are O(1) with no hashing,
//! and it tells apart a *duplicate* (an id of this session that was already answered) from an
//! *unknown* id (never sent on this session). Owned by one connection; no allocation once the
//! window has grown to the usual number of outstanding requests.

use std::collections::VecDeque;
use std::time::Instant;

/// One request awaiting its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flight {
    /// Lane index.
    pub(crate) lane: usize,
    /// When the schedule meant it to be sent.
    pub(crate) intended: Instant,
    /// When it was handed to the socket.
    pub(crate) sent: Instant,
}

/// What a reply's id matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The request it answers (now removed).
    Found(Flight),
    /// An id of this session that was already answered.
    Duplicate,
    /// An id never sent on this session.
    Unknown,
}

/// The in-flight window of one session.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    /// First id of the current session; ids below it belong to earlier sessions.
    session_first: u64,
    /// Id of `slots[0]`; every id in `session_first..base` has been answered.
    base: u64,
    /// `slots[i]` is id `base + i`; `None` once answered. Front is never `None`.
    slots: VecDeque<Option<Flight>>,
    /// Number of `Some` slots.
    live: usize,
}

impl InFlight {
    /// Starts a new session whose first request will have id `next_id`.
    pub(crate) fn start_session(&mut self, next_id: u64) {
        self.session_first = next_id;
        self.base = next_id;
        self.slots.clear();
        self.live = 0;
    }

    /// Records request `id`, which must be the next id of the session.
    pub(crate) fn insert(&mut self, id: u64, flight: Flight) {
        debug_assert_eq!(id, self.base + self.slots.len() as u64, "ids are consecutive");
        self.slots.push_back(Some(flight));
        self.live += 1;
    }

    /// Matches a reply's id.
    pub(crate) fn take(&mut self, id: u64) -> Lookup {
        if id < self.session_first {
            return Lookup::Unknown;
        }
        let Some(offset) = id.checked_sub(self.base) else {
            return Lookup::Duplicate;
        };
        let Some(slot) = self.slots.get_mut(offset as usize) else {
            return Lookup::Unknown;
        };
        let Some(flight) = slot.take() else {
            return Lookup::Duplicate;
        };
        self.live -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        Lookup::Found(flight)
    }

    /// The id of the oldest request awaiting a reply: what a reply without an id answers
    /// (HTTP/1.1 replies come in request order).
    pub(crate) fn oldest(&self) -> Option<u64> {
        (!self.slots.is_empty()).then_some(self.base)
    }

    /// Requests still awaiting a reply.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Removes and returns every request still awaiting a reply.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Flight> + '_ {
        self.base += self.slots.len() as u64;
        self.live = 0;
        self.slots.drain(..).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flight(lane: usize) -> Flight {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let t0 = *T0.get_or_init(Instant::now);
        Flight { lane, intended: t0, sent: t0 }
    }

    #[test]
    fn matches_out_of_order_and_detects_duplicates_and_unknowns() {
        let mut w = InFlight::default();
        w.start_session(10);
        for id in 10..14 {
            w.insert(id, flight(id as usize));
        }
        assert_eq!(w.take(12), Lookup::Found(flight(12)));
        assert_eq!(w.take(12), Lookup::Duplicate, "answered, still inside the window");
        assert_eq!(w.take(10), Lookup::Found(flight(10)));
        assert_eq!(w.take(10), Lookup::Duplicate, "answered, below the window");
        assert_eq!(w.take(9), Lookup::Unknown, "from before this session");
        assert_eq!(w.take(14), Lookup::Unknown, "never sent");
        assert_eq!((w.len(), w.oldest()), (2, Some(11)));
        let rest: Vec<_> = w.drain().map(|f| f.lane).collect();
        assert_eq!(rest, vec![11, 13]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_new_session_forgets_the_old_one() {
        let mut w = InFlight::default();
        w.start_session(0);
        w.insert(0, flight(0));
        w.start_session(1);
        assert_eq!(w.take(0), Lookup::Unknown);
        w.insert(1, flight(1));
        assert_eq!(w.take(1), Lookup::Found(flight(1)));
        assert_eq!(w.oldest(), None);
    }
}
