//! Byte accounting: every byte a connection causes the engine to hold is counted here, and
//! only here. [`ConnBudget`] is one connection's account, owned by its session on its parser
//! thread; the lane, the write buffer and the read buffer report to it, and the parser thread
//! asks it whether the connection may read, handle input or submit jobs. [`MemoryBudget`] is
//! the server's total, shared by the parser threads (`Limits::memory_limit_bytes`): past it,
//! connections holding more than their fair share (the limit divided among the open
//! connections) are paused too, while those under it go on (their OOB requests still run).
//!
//! What is counted: parked request bytes and their decoded calls, encoded replies waiting in
//! the lane for their turn, the lane's ring of entries by its capacity, an estimate
//! ([`REPLY_ESTIMATE`]) for each job with the executor (replaced by the exact size once its
//! reply is encoded into the write buffer), the write buffer's capacity (unsent output and
//! the spare room a burst left), and the read buffer's capacity. Plain integers, single owner: no atomics on the request path. The parser thread
//! publishes each connection's change once per turn.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes reserved at first for the reply of each job in flight, until the reply is encoded
/// and counted exactly. Most control-plane replies are far smaller. A connection's estimate
/// then rises to the largest reply it has received, so a client that asks for large replies
/// (`query-commands`) and does not read overshoots its budget by at most one in-flight
/// window of its first large replies.
pub(crate) const REPLY_ESTIMATE: usize = 512;

/// Why a connection may not grow now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pause {
    /// Over its own budget: its client must read (or its jobs finish) first.
    Own,
    /// The server is over its memory limit and this connection holds more than its share:
    /// retried as memory drains elsewhere.
    Shared,
}

impl Pause {
    /// The reasons' names in the metrics' `reason` label and `query-stats`, in
    /// [`Pause::index`] order.
    pub(crate) const NAMES: [&'static str; 2] = ["own", "shared"];

    /// This reason's index in per-reason counters.
    pub(crate) fn index(self) -> usize {
        match self {
            Pause::Own => 0,
            Pause::Shared => 1,
        }
    }
}

/// Memory a parked job holds besides its request's bytes and its lane entry (counted with
/// the ring, `set_lane`): the boxed decoded call and its arguments, a glibc chunk of about
/// 100 bytes for the demo's commands. Measured: 100 connections with 65,000 `counter-add`
/// parked each grew the release engine's RSS by about 215 bytes per job, of which the lane
/// entry was 128 then.
pub(crate) const PARKED_JOB: usize = 96;

/// A connection's change is published to the [`MemoryBudget`] at least every this many bytes
/// (besides once per turn), so what other threads cannot see yet stays about one read per
/// thread, even where a read's requests become reply reserves many times their size.
const PUBLISH_EVERY: usize = 16 * 1024;

/// Write buffers of at most this capacity are kept when a connection goes quiet (conn.rs
/// releases larger ones); their spare room does not count against the fair share.
pub(crate) const QUIET_WRITE_CAPACITY: usize = 16 * 1024;

/// Connections under their share may take the server 1/SLACK_FRACTION past its limit.
const SLACK_FRACTION: usize = 16;

/// The server's byte total, shared by all parser threads. Each thread adds its connections'
/// changes once per connection turn (one relaxed atomic add), never per request.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    held: AtomicUsize,
    /// The highest `held` seen.
    peak: AtomicUsize,
    /// Open connections (the fair share divides the limit among them).
    conns: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes; 0 is no limit (only configurations that skipped
    /// validation, such as the benchmarks' wiring, have 0 here).
    pub(crate) fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            limit: if limit == 0 { usize::MAX } else { limit },
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            conns: AtomicUsize::new(0),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    pub(crate) fn is_over(&self) -> bool {
        self.held() > self.limit
    }

    /// Adds one connection's change (see [`ConnBudget::publish`]).
    pub(crate) fn add(&self, delta: isize) {
        if delta >= 0 {
            let now = self.held.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
            self.peak.fetch_max(now + delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.held.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    pub(crate) fn opened(&self) {
        self.conns.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.conns.fetch_sub(1, Ordering::Relaxed);
    }

    /// What one connection may hold beyond its base read buffer while the server is over
    /// its limit.
    fn share(&self) -> usize {
        self.limit / self.conns.load(Ordering::Relaxed).max(1)
    }

    /// How far past the limit connections under their share may still grow: a little, so
    /// that a connection with a request or two parked is not stopped at once, but bounded,
    /// since every connection under its share growing to it would double the limit. Past
    /// the slack only connections holding nothing beyond their read buffer and one job in
    /// flight go on (their OOB requests still run: an OOB reply is written at once).
    fn slack(&self) -> usize {
        self.limit / SLACK_FRACTION
    }
}

/// The default memory limit for a machine: a quarter of its memory (the engine shares the
/// machine with what it controls), at most 4 GiB (a control plane rarely needs more; a larger
/// one is set explicitly). 4 GiB when `/proc/meminfo` cannot be read.
pub(crate) fn default_memory_limit() -> usize {
    const CAP: usize = 4 << 30;
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| mem_total(&info));
    total.map_or(CAP, |bytes| (bytes / 4).min(CAP))
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<usize> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// One connection's byte account.
#[derive(Debug)]
pub(crate) struct ConnBudget {
    /// Past this many held bytes the connection reads and handles no more input.
    limit: usize,
    /// Bytes of requests parked in the lane (waiting for the in-flight limit or credit).
    parked: usize,
    /// Bytes of encoded replies waiting in the lane behind earlier requests.
    ready: usize,
    /// Jobs with the executor (each holds `estimate` until its reply is encoded).
    in_flight: usize,
    /// Bytes reserved per reply in flight: the largest reply so far, at least
    /// [`REPLY_ESTIMATE`].
    estimate: usize,
    /// Bytes in the write buffer not yet written to the socket.
    unsent: usize,
    /// Capacity of the write buffer (at least `unsent`): what it holds, spare room included.
    write_buffer: usize,
    /// Capacity of the read buffer.
    read_buffer: usize,
    /// Bytes of the lane's ring of entries, by its capacity.
    lane: usize,
    /// [`ConnBudget::held`] as last published to the [`MemoryBudget`].
    published: usize,
    /// The read buffer every connection has (not counted against the fair share, so idle
    /// connections are never paused by the server's limit).
    base: usize,
    /// The lane's ring a quiet connection keeps (not counted against the fair share either).
    quiet_lane: usize,
}

impl ConnBudget {
    pub(crate) fn new(limit: usize) -> ConnBudget {
        ConnBudget {
            limit,
            parked: 0,
            ready: 0,
            in_flight: 0,
            estimate: REPLY_ESTIMATE,
            unsent: 0,
            write_buffer: 0,
            read_buffer: 0,
            lane: 0,
            published: 0,
            base: 0,
            quiet_lane: 0,
        }
    }

    /// The read buffer size every connection starts with, and its read buffer now.
    pub(crate) fn with_base(mut self, read_buffer: usize) -> ConnBudget {
        self.base = read_buffer;
        self.read_buffer = read_buffer;
        self
    }

    /// The lane's ring a quiet connection keeps, allowed beside its read buffer.
    pub(crate) fn with_quiet_lane(mut self, bytes: usize) -> ConnBudget {
        self.quiet_lane = bytes;
        self
    }

    /// A request of `bytes` is parked (its job's own size is counted on top).
    pub(crate) fn park(&mut self, bytes: usize) {
        self.parked += bytes + PARKED_JOB;
    }

    pub(crate) fn unpark(&mut self, bytes: usize) {
        self.parked -= bytes + PARKED_JOB;
    }

    pub(crate) fn queue_ready(&mut self, bytes: usize) {
        self.ready += bytes;
    }

    pub(crate) fn release_ready(&mut self, bytes: usize) {
        self.ready -= bytes;
    }

    /// A job went to the executor: its reply is reserved.
    pub(crate) fn reserve_reply(&mut self) {
        self.in_flight += 1;
    }

    /// A job's reply is encoded, `bytes` long (and now counted as unsent output).
    pub(crate) fn release_reply(&mut self, bytes: usize) {
        self.in_flight -= 1;
        self.estimate = self.estimate.max(bytes);
    }

    /// Bytes reserved per reply in flight: the largest reply so far, at least
    /// [`REPLY_ESTIMATE`].
    pub(crate) fn estimate(&self) -> usize {
        self.estimate
    }

    /// The write buffer now: `unsent` bytes waiting for the socket in a buffer of
    /// `capacity` bytes.
    pub(crate) fn set_output(&mut self, unsent: usize, capacity: usize) {
        self.unsent = unsent;
        self.write_buffer = capacity.max(unsent);
    }

    pub(crate) fn set_read_buffer(&mut self, bytes: usize) {
        self.read_buffer = bytes;
    }

    /// The lane's ring now holds `bytes` (its capacity).
    pub(crate) fn set_lane(&mut self, bytes: usize) {
        self.lane = bytes;
    }

    /// Everything this connection holds now: the write buffer and the lane by capacity.
    pub(crate) fn held(&self) -> usize {
        self.parked + self.owed() + self.write_buffer + self.read_buffer + self.lane
    }

    /// Replies owed and not yet in the write buffer, estimates included.
    fn owed(&self) -> usize {
        self.ready + self.in_flight * self.estimate
    }

    /// Replies owed or unsent, estimates included: what submitting more would add to (a
    /// write buffer's spare room is reused for the next replies, so it is not counted here).
    fn replies(&self) -> usize {
        self.owed() + self.unsent
    }

    /// What every connection may keep without counting against its share of the server's
    /// limit: its initial read buffer, a quiet connection's write buffer (spare room up to
    /// [`QUIET_WRITE_CAPACITY`]) and the lane's ring a connection keeps
    /// (`lane::KEEP_ENTRIES`), so idle and request-reply connections are never paused.
    fn allowance(&self) -> usize {
        let spare = self.write_buffer - self.unsent;
        self.read_buffer.min(self.base)
            + spare.min(QUIET_WRITE_CAPACITY)
            + self.lane.min(self.quiet_lane)
    }

    /// Whether the connection must stop reading and handling input now, and why: over its
    /// own budget, or over its share while the server is over its limit (counting this
    /// connection's changes not yet published).
    pub(crate) fn pause(&self, memory: &MemoryBudget) -> Option<Pause> {
        let held = self.held();
        if held > self.limit {
            return Some(Pause::Own);
        }
        let total = memory.held().saturating_add_signed(held as isize - self.published as isize);
        let excess = held - self.allowance();
        let over_share = total > memory.limit && excess >= memory.share().max(1);
        // One job in flight does not count here: a client waiting on a long in-band command
        // (a `stall`) must still get its OOB requests (a `release`) answered.
        let beyond_one_job = excess.saturating_sub(self.in_flight.min(1) * self.estimate);
        let over_slack = total > memory.limit.saturating_add(memory.slack()) && beyond_one_job > 0;
        (over_share || over_slack).then_some(Pause::Shared)
    }

    /// Whether one more job may go to the executor: only while its reply fits next to the
    /// replies already owed, so a client that does not read cannot make the engine produce
    /// replies without bound; with jobs in flight, only while it fits next to everything
    /// else the connection holds too (buffers by capacity, the lane's ring), so a client
    /// reading its replies back slowly stays within its budget; and, past the server's
    /// limit, not by a connection over its share. Parked requests never block submission
    /// (submitting is what frees them), and a lane with nothing in flight may always submit
    /// one job whose reply fits (an outcome to come guarantees progress).
    pub(crate) fn may_submit(&self, memory: &MemoryBudget) -> bool {
        let fits = self.replies() + self.estimate <= self.limit;
        let fits_all = self.held() - self.parked + self.estimate <= self.limit;
        fits && (self.in_flight == 0 || (fits_all && self.pause(memory) != Some(Pause::Shared)))
    }

    /// The change in held bytes since the last call, to add to the [`MemoryBudget`].
    pub(crate) fn publish(&mut self) -> isize {
        let held = self.held();
        let delta = held as isize - self.published as isize;
        self.published = held;
        delta
    }

    /// Publishes the change now if it has grown past [`PUBLISH_EVERY`] since the last time.
    pub(crate) fn publish_if_due(&mut self, memory: &MemoryBudget) {
        if self.held().abs_diff(self.published) >= PUBLISH_EVERY {
            memory.add(self.publish());
        }
    }

    /// The connection closes: what it had published, to take off the [`MemoryBudget`].
    pub(crate) fn withdraw(&mut self) -> usize {
        std::mem::take(&mut self.published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_server_limit_only_connections_over_their_share_pause() {
        let memory = MemoryBudget::new(10_000);
        memory.opened();
        memory.opened();
        let mut big = ConnBudget::new(1 << 20).with_base(1000);
        big.park(9_000 - PARKED_JOB);
        memory.add(big.publish());
        let mut small = ConnBudget::new(1 << 20).with_base(1000);
        memory.add(small.publish());
        assert_eq!(memory.held(), 11_000);
        assert_eq!(big.pause(&memory), Some(Pause::Shared), "9,000 over a share of 5,000");
        assert_eq!(small.pause(&memory), None, "an idle connection never pauses");
        small.park(4_000 - PARKED_JOB);
        assert_eq!(small.pause(&memory), Some(Pause::Shared), "under its share, past the slack");
        big.unpark(8_000 - PARKED_JOB);
        memory.add(big.publish());
        assert_eq!(memory.held(), 3_000);
        memory.add(small.publish());
        assert_eq!(memory.held(), 7_000);
        big.park(3_500 - PARKED_JOB);
        memory.add(big.publish());
        assert_eq!(small.pause(&memory), None, "under its share, within the slack");
        small.park(1_000 - PARKED_JOB);
        assert_eq!(small.pause(&memory), Some(Pause::Shared), "at its share");
        big.unpark(4_500 - PARKED_JOB);
        memory.add(big.publish());
        assert_eq!(small.pause(&memory), None, "memory drained");
        memory.add(-(big.withdraw() as isize));
        assert_eq!(memory.peak(), 11_000);
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let info = "MemTotal:        8029152 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total(info), Some(8_029_152 * 1024));
        assert_eq!(mem_total("nothing"), None);
    }

    #[test]
    fn replies_owed_block_submission_but_parked_requests_do_not() {
        let memory = MemoryBudget::new(usize::MAX);
        let mut budget = ConnBudget::new(4 * REPLY_ESTIMATE);
        budget.park(100 * REPLY_ESTIMATE);
        assert_eq!(budget.pause(&memory), Some(Pause::Own));
        assert!(budget.may_submit(&memory), "submitting frees parked bytes");
        budget.unpark(100 * REPLY_ESTIMATE);
        for _ in 0..3 {
            budget.reserve_reply();
        }
        assert!(budget.may_submit(&memory));
        budget.reserve_reply();
        assert!(!budget.may_submit(&memory), "four replies reserved fill the budget");
        assert_eq!(budget.pause(&memory), None);
        budget.set_output(1, 1);
        assert_eq!(budget.pause(&memory), Some(Pause::Own));
        budget.release_reply(2 * REPLY_ESTIMATE);
        budget.set_output(0, 0);
        assert_eq!(budget.held(), 3 * 2 * REPLY_ESTIMATE, "the estimate rose to the largest reply");
    }

    #[test]
    fn with_jobs_in_flight_everything_held_must_leave_room_for_one_more_reply() {
        let memory = MemoryBudget::new(usize::MAX);
        let mut budget = ConnBudget::new(16 * REPLY_ESTIMATE);
        budget.set_output(0, 14 * REPLY_ESTIMATE); // a slow reader's buffer, sent but kept
        assert!(budget.may_submit(&memory), "nothing in flight: one job always goes");
        budget.reserve_reply();
        assert!(budget.may_submit(&memory), "15 of 16 estimates held");
        budget.reserve_reply();
        assert!(!budget.may_submit(&memory), "the buffer's room and two replies fill it");
        budget.park(100 * REPLY_ESTIMATE);
        budget.release_reply(REPLY_ESTIMATE);
        assert!(budget.may_submit(&memory), "parked requests never block submission");
        budget.set_lane(REPLY_ESTIMATE);
        assert!(!budget.may_submit(&memory), "the lane's ring counts too");
    }

    #[test]
    fn the_write_buffer_counts_by_capacity_and_its_quiet_room_is_allowed() {
        let memory = MemoryBudget::new(10_000);
        memory.opened();
        memory.opened();
        let mut budget = ConnBudget::new(1 << 20).with_base(1000);
        budget.set_output(100, 8_000);
        assert_eq!(budget.held(), 9_000, "read buffer + write buffer capacity");
        memory.add(budget.publish());
        memory.add(1_500);
        assert_eq!(budget.pause(&memory), None, "spare room of a quiet buffer is allowed");
        budget.set_output(100, 40_000);
        assert_eq!(budget.held(), 41_000);
        assert_eq!(budget.pause(&memory), Some(Pause::Shared), "a burst's room counts");
        let mut small = ConnBudget::new(64 * 1024).with_base(1000);
        small.set_output(0, 256 * 1024);
        assert_eq!(small.pause(&MemoryBudget::new(0)), Some(Pause::Own), "capacity, not length");
        small.set_output(0, 0);
        assert_eq!(small.pause(&MemoryBudget::new(0)), None);
    }

    #[test]
    fn publishing_reports_changes_once() {
        let mut budget = ConnBudget::new(1 << 20);
        budget.set_read_buffer(1000);
        assert_eq!(budget.publish(), 1000);
        assert_eq!(budget.publish(), 0);
        budget.set_read_buffer(10);
        assert_eq!(budget.publish(), -990);
        assert_eq!(budget.withdraw(), 10);
    }
}
