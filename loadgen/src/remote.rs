//! Multi-remote failover, OVS-style: which remote a connection tries next, and how long it
//! waits first. Pure logic, unit-tested here; the driver owns the sockets and the clock.
//!
//! Modelled on OVS `lib/reconnect.c` (`reconnect_disconnected`) and
//! `jsonrpc_session_open_multiple`: each connection shuffles the remotes once, then tries them
//! in turn, advancing on every connect failure or disconnect. It starts with one backoff-free
//! try per remote; after that, failures back off `min`, doubling up to `max`. A connection
//! that was up at least as long as the current backoff restarts the backoff at `min` (it was
//! healthy, so the next failure is news, not a flapping peer).

use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::config::Backoff;

/// One connection's position in the remote list and its backoff state.
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    /// Remote indices in this connection's shuffled order; never empty.
    order: Vec<usize>,
    /// Position in `order` of the next remote to try.
    next: usize,
    /// Failures still allowed without backoff (OVS `backoff_free_tries`).
    free_tries: usize,
    /// Delay before the next attempt (zero until the free tries are used up).
    backoff: Duration,
    /// Limits.
    limits: Backoff,
}

impl Rotation {
    /// A rotation over `remotes` remotes in random order.
    pub(crate) fn shuffled(remotes: usize, limits: Backoff, rng: &mut impl Rng) -> Rotation {
        let mut order: Vec<usize> = (0..remotes).collect();
        order.shuffle(rng);
        Rotation::in_order(order, limits)
    }

    /// A rotation trying `order` as given (tests, and the shuffle above).
    pub(crate) fn in_order(order: Vec<usize>, limits: Backoff) -> Rotation {
        assert!(!order.is_empty(), "a rotation needs at least one remote");
        let free_tries = order.len();
        Rotation { order, next: 0, free_tries, backoff: Duration::ZERO, limits }
    }

    /// The remote to try now; the following call returns the next one in turn.
    pub(crate) fn next_remote(&mut self) -> usize {
        let remote = self.order[self.next];
        self.next = (self.next + 1) % self.order.len();
        remote
    }

    /// Records a connect failure (`up_for` = `None`) or a disconnect after `up_for`, and
    /// returns how long to wait before the next attempt.
    pub(crate) fn on_failure(&mut self, up_for: Option<Duration>) -> Duration {
        let Backoff { min, max } = self.limits;
        self.backoff = if self.free_tries > 1 {
            self.free_tries -= 1;
            Duration::ZERO
        } else if up_for.is_some_and(|up| up >= self.backoff) || self.backoff < min {
            min
        } else if self.backoff < max / 2 {
            self.backoff * 2
        } else {
            max
        };
        self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn one_free_try_per_remote_then_doubling_to_the_cap() {
        let mut r = Rotation::in_order(vec![0, 1], Backoff::default());
        let mut seen = Vec::new();
        for _ in 0..7 {
            let remote = r.next_remote();
            seen.push((remote, r.on_failure(None).as_secs()));
        }
        // Each entry: remote tried, then the wait before the *next* try.
        assert_eq!(seen, vec![(0, 0), (1, 1), (0, 2), (1, 4), (0, 8), (1, 8), (0, 8)]);
    }

    #[test]
    fn a_healthy_session_restarts_backoff_at_min() {
        let limits = Backoff { min: Duration::from_millis(100), max: secs(1) };
        let mut r = Rotation::in_order(vec![0], limits);
        for _ in 0..5 {
            r.on_failure(None);
        }
        assert_eq!(r.on_failure(Some(Duration::from_millis(50))), secs(1), "too short: flapping");
        assert_eq!(r.on_failure(Some(secs(5))), Duration::from_millis(100));
    }

    #[test]
    fn failover_after_a_disconnect_is_immediate_while_free_tries_remain() {
        let mut r = Rotation::in_order(vec![1, 0, 2], Backoff::default());
        assert_eq!(r.next_remote(), 1);
        assert_eq!(r.on_failure(Some(secs(10))), Duration::ZERO);
        assert_eq!(r.next_remote(), 0);
        assert_eq!(r.on_failure(Some(secs(10))), Duration::ZERO);
        assert_eq!(r.next_remote(), 2);
        assert_eq!(r.on_failure(Some(secs(10))), secs(1), "free tries used up");
        assert_eq!(r.next_remote(), 1, "rotation wraps around");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = rand::rng();
        let mut r = Rotation::shuffled(5, Backoff::default(), &mut rng);
        let mut seen: Vec<_> = (0..5).map(|_| r.next_remote()).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    }
}
