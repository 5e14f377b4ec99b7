//! A connection's in-band lane: the ordered list of in-band requests that still owe a reply.
//! Owned by the connection, on its parser thread.
//!
//! Replies leave in request order. Jobs go to the executor in order, and the executor answers
//! in order, so its outcomes always match the oldest submitted entry. Errors found on the
//! parser thread (bad input, unknown command, bad arguments) wait in the lane as ready bytes
//! until every earlier entry has been answered. Beyond the in-flight limit, or when no credit
//! is left (`Limits::queue_capacity` jobs outstanding), jobs are parked here; reading and OOB requests go on meanwhile.
//!
//! The entries' ring is counted on the connection's budget by its capacity (what it holds,
//! room to grow included) and shrinks as the lane drains, so a lane that a burst grew does
//! not hold its memory uncounted while new input arrives behind the old.

use std::collections::VecDeque;

use ooblane_wire::reply::ReplyTo;

use crate::budget::{ConnBudget, MemoryBudget};
use crate::job::{Job, JobSender};

/// One in-band request that owes a reply.
enum Entry<S, V> {
    /// With the executor; its outcome comes back through the inbox.
    Submitted(ReplyTo),
    /// Waiting for the in-flight limit or queue space.
    Parked { to: ReplyTo, job: Job<S, V>, bytes: usize },
    /// Answered on the parser thread; the encoded reply waits for its turn.
    Ready(Vec<u8>),
}

/// Entries a lane keeps room for however far it drains: as many as a connection has in
/// flight by default (`Limits::max_inflight_per_conn`), so a client that pipelines in bursts
/// never has its ring reallocated once warm (the in-band path allocates nothing per
/// request), and a lane only shrinks back from a flood. This room (22 KiB) is allowed on the
/// budget beside the read buffer (`ConnBudget::allowance`), so a quiet connection is never
/// paused for it.
pub(crate) const KEEP_ENTRIES: usize = 256;

/// The least a full ring grows by.
const MIN_GROWTH: usize = 16;

/// Bytes of the ring for `entries` entries.
pub(crate) fn ring_bytes<S, V>(entries: usize) -> usize {
    entries * std::mem::size_of::<Entry<S, V>>()
}

/// Result of handing a job to the lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Submitted,
    Parked,
    /// No credit was left: the job is parked until outcomes give credits back.
    ParkedFull,
}

/// The in-band lane of one connection.
pub(crate) struct Lane<S, V> {
    entries: VecDeque<Entry<S, V>>,
    /// Leading entries that are submitted or ready; `entries[unparked]`, if any, is parked.
    /// Everything after the first parked entry stays behind it, to keep the order.
    unparked: usize,
    /// Submitted entries.
    inflight: usize,
}

impl<S, V> Default for Lane<S, V> {
    fn default() -> Self {
        Lane { entries: VecDeque::new(), unparked: 0, inflight: 0 }
    }
}

impl<S, V> std::fmt::Debug for Lane<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("entries", &self.entries.len())
            .field("inflight", &self.inflight)
            .finish()
    }
}

impl<S, V> Lane<S, V> {
    /// Nothing owes a reply: a reply produced now may be written at once.
    pub(crate) fn is_idle(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn has_parked(&self) -> bool {
        self.unparked < self.entries.len()
    }

    /// Parked jobs wait for credits, not for this connection's own in-flight limit.
    pub(crate) fn waits_for_credit(&self, limit: usize) -> bool {
        self.has_parked() && self.inflight < limit
    }

    /// Queues an already encoded reply behind the entries that owe one.
    pub(crate) fn push_ready(&mut self, reply: Vec<u8>, budget: &mut ConnBudget) {
        if !self.has_parked() {
            self.unparked += 1;
        }
        budget.queue_ready(reply.len());
        self.push(Entry::Ready(reply));
        self.account(budget);
    }

    /// Appends an entry, growing the ring by a quarter when full rather than doubling it:
    /// the ring counts on the budget by its capacity, and a doubling near the budget would
    /// overshoot it by as much again in one step.
    fn push(&mut self, entry: Entry<S, V>) {
        if self.entries.len() == self.entries.capacity() {
            self.entries.reserve_exact((self.entries.capacity() / 4).max(MIN_GROWTH));
        }
        self.entries.push_back(entry);
    }

    /// Tells the budget what the ring holds now.
    fn account(&self, budget: &mut ConnBudget) {
        budget.set_lane(ring_bytes::<S, V>(self.entries.capacity()));
    }

    /// Gives back the ring's room beyond [`KEEP_ENTRIES`] once the lane has drained to a
    /// quarter of it (keeping twice what is left): each shrink moves at most a quarter of
    /// the entries the ring has seen leave since it grew, so it costs O(1) per entry.
    fn shrink_if_drained(&mut self) {
        let capacity = self.entries.capacity();
        if capacity > KEEP_ENTRIES && self.entries.len() < capacity / 4 {
            self.entries.shrink_to((self.entries.len() * 2).max(KEEP_ENTRIES));
        }
    }

    /// Hands a job to the executor, or parks it.
    pub(crate) fn push_job(
        &mut self,
        to: ReplyTo,
        job: Job<S, V>,
        bytes: usize,
        limit: usize,
        jobs: &mut JobSender<S, V>,
        budget: &mut ConnBudget,
        memory: &MemoryBudget,
    ) -> Pushed {
        if self.has_parked() || self.inflight >= limit || !budget.may_submit(memory) {
            self.park(to, job, bytes, budget);
            return Pushed::Parked;
        }
        match jobs.try_push(job) {
            Ok(()) => {
                self.push(Entry::Submitted(to));
                self.account(budget);
                self.unparked += 1;
                self.inflight += 1;
                budget.reserve_reply();
                Pushed::Submitted
            }
            Err(job) => {
                self.park(to, job, bytes, budget);
                Pushed::ParkedFull
            }
        }
    }

    fn park(&mut self, to: ReplyTo, job: Job<S, V>, bytes: usize, budget: &mut ConnBudget) {
        budget.park(bytes);
        self.push(Entry::Parked { to, job, bytes });
        self.account(budget);
    }

    /// Submits parked jobs while the in-flight limit, the budget for replies and the credits
    /// allow. Returns false if credits ran out.
    pub(crate) fn submit_parked(
        &mut self,
        limit: usize,
        jobs: &mut JobSender<S, V>,
        budget: &mut ConnBudget,
        memory: &MemoryBudget,
    ) -> bool {
        while self.unparked < self.entries.len() {
            let slot = &mut self.entries[self.unparked];
            if let Entry::Ready(_) = slot {
                self.unparked += 1; // ready replies need no executor slot
                continue;
            }
            budget.publish_if_due(memory);
            if self.inflight >= limit || !budget.may_submit(memory) {
                return true;
            }
            let Entry::Parked { to, job, bytes } =
                std::mem::replace(slot, Entry::Ready(Vec::new()))
            else {
                unreachable!("entries from `unparked` on are parked or ready");
            };
            match jobs.try_push(job) {
                Ok(()) => {
                    *slot = Entry::Submitted(to);
                    self.unparked += 1;
                    self.inflight += 1;
                    budget.unpark(bytes);
                    budget.reserve_reply();
                }
                Err(job) => {
                    *slot = Entry::Parked { to, job, bytes };
                    return false;
                }
            }
        }
        true
    }

    /// The executor answered the oldest submitted request: `encode` writes its reply (given
    /// where it goes), then every ready reply now at the front follows.
    pub(crate) fn complete(
        &mut self,
        out: &mut Vec<u8>,
        budget: &mut ConnBudget,
        encode: impl FnOnce(&mut Vec<u8>, &ReplyTo),
    ) {
        let Some(Entry::Submitted(to)) = self.entries.pop_front() else {
            unreachable!("an executor outcome always matches the oldest submitted entry");
        };
        self.unparked -= 1;
        self.inflight -= 1;
        let before = out.len();
        encode(out, &to);
        budget.release_reply(out.len() - before);
        while let Some(Entry::Ready(_)) = self.entries.front() {
            let Some(Entry::Ready(bytes)) = self.entries.pop_front() else { unreachable!() };
            self.unparked -= 1;
            budget.release_ready(bytes.len());
            out.extend_from_slice(&bytes);
        }
        self.shrink_if_drained();
        self.account(budget);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::budget::{PARKED_JOB, REPLY_ESTIMATE};
    use crate::job::{Batch, Exchange, Mailbox, Work};
    use ooblane_wire::CommandError;
    use ooblane_wire::reply::{self, Form, IdBuf};

    type TestLane = Lane<(), ()>;

    fn job() -> Job<(), ()> {
        Job::control(Work::ParserDone)
    }

    fn to(id: &[u8]) -> ReplyTo {
        ReplyTo { form: Form::Qmp, id: IdBuf::new(id) }
    }

    /// A sender whose pool holds `capacity` credits, and the queue it sends to.
    fn sender(capacity: usize) -> (JobSender<(), ()>, crossbeam_channel::Receiver<Batch<(), ()>>) {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        let exchange = Arc::new(Exchange::new(vec![Mailbox::new(waker, capacity)], capacity));
        let (tx, rx) = crossbeam_channel::bounded(capacity + 1);
        (JobSender::new(0, tx, exchange), rx)
    }

    /// The executor ran `n` jobs: their outcomes give the credits back.
    fn answered(jobs: &mut JobSender<(), ()>, rx: &crossbeam_channel::Receiver<Batch<(), ()>>) {
        jobs.flush();
        let n: usize = rx.try_iter().map(|batch| batch.jobs.len()).sum();
        jobs.completed(n);
    }

    fn fail(lane: &mut TestLane, out: &mut Vec<u8>, b: &mut ConnBudget) {
        let outcome: Result<(), _> = Err(CommandError::generic("x"));
        lane.complete(out, b, |out, to| reply::outcome(out, to, &outcome));
    }

    #[test]
    fn replies_leave_in_order_with_local_errors_and_parking() {
        let (mut jobs, rx) = sender(8);
        let mut lane = TestLane::default();
        let mut b = ConnBudget::new(1 << 20);
        let m = MemoryBudget::new(usize::MAX);
        let mut out = Vec::new();
        assert_eq!(lane.push_job(to(b"1"), job(), 10, 2, &mut jobs, &mut b, &m), Pushed::Submitted);
        lane.push_ready(b"E2\n".to_vec(), &mut b);
        assert_eq!(lane.push_job(to(b"3"), job(), 10, 2, &mut jobs, &mut b, &m), Pushed::Submitted);
        assert_eq!(lane.push_job(to(b"4"), job(), 10, 2, &mut jobs, &mut b, &m), Pushed::Parked);
        lane.push_ready(b"E5\n".to_vec(), &mut b);
        let two_in_flight = 2 * REPLY_ESTIMATE;
        let ring = ring_bytes::<(), ()>(lane.entries.capacity());
        assert!(ring >= 5 * std::mem::size_of::<Entry<(), ()>>());
        assert_eq!(
            b.held(),
            10 + PARKED_JOB + 3 + 3 + two_in_flight + ring,
            "one parked request, two ready replies, the ring"
        );
        assert!(!lane.waits_for_credit(2), "parked by the in-flight limit");

        answered(&mut jobs, &rx);
        fail(&mut lane, &mut out, &mut b);
        assert!(lane.submit_parked(2, &mut jobs, &mut b, &m), "one slot freed, credits left");
        assert_eq!(b.held(), 3 + two_in_flight + ring, "E5 waits behind requests 3 and 4");
        fail(&mut lane, &mut out, &mut b);
        answered(&mut jobs, &rx);
        fail(&mut lane, &mut out, &mut b);
        assert!(lane.is_idle());
        let text = String::from_utf8(out).unwrap();
        let ids: Vec<&str> = text
            .lines()
            .map(|l| if l.starts_with('E') { l } else { &l[l.len() - 2..l.len() - 1] })
            .collect();
        assert_eq!(ids, vec!["1", "E2", "3", "4", "E5"]);
    }

    #[test]
    fn no_credit_parks_and_resubmits_once_outcomes_return() {
        let (mut jobs, rx) = sender(1);
        let mut lane = TestLane::default();
        let mut b = ConnBudget::new(1 << 20);
        let m = MemoryBudget::new(usize::MAX);
        assert_eq!(lane.push_job(to(b"1"), job(), 5, 8, &mut jobs, &mut b, &m), Pushed::Submitted);
        assert_eq!(lane.push_job(to(b"2"), job(), 5, 8, &mut jobs, &mut b, &m), Pushed::ParkedFull);
        assert!(lane.waits_for_credit(8));
        assert!(!lane.submit_parked(8, &mut jobs, &mut b, &m));
        answered(&mut jobs, &rx);
        assert!(lane.submit_parked(8, &mut jobs, &mut b, &m));
        assert!(!lane.has_parked());
    }

    #[test]
    fn the_ring_is_counted_by_capacity_and_shrinks_as_the_lane_drains() {
        let (mut jobs, rx) = sender(4096);
        let mut lane = TestLane::default();
        let mut b = ConnBudget::new(1 << 30);
        let m = MemoryBudget::new(usize::MAX);
        let mut out = Vec::new();
        for i in 0..1000 {
            let id = format!("{i}");
            lane.push_job(to(id.as_bytes()), job(), 10, 2000, &mut jobs, &mut b, &m);
        }
        let grown = lane.entries.capacity();
        assert!(grown >= 1000);
        let in_flight = 1000 * REPLY_ESTIMATE;
        assert_eq!(b.held(), in_flight + ring_bytes::<(), ()>(grown));
        answered(&mut jobs, &rx);
        for _ in 0..990 {
            fail(&mut lane, &mut out, &mut b);
        }
        let left = lane.entries.capacity();
        assert_eq!(left, KEEP_ENTRIES, "room for 10 left: back to what a lane keeps");
        assert_eq!(b.held(), 10 * REPLY_ESTIMATE + ring_bytes::<(), ()>(left));
        for _ in 0..10 {
            fail(&mut lane, &mut out, &mut b);
        }
        assert!(lane.is_idle());
        assert_eq!(lane.entries.capacity(), KEEP_ENTRIES, "a burst's room is kept, no more");
    }
}
