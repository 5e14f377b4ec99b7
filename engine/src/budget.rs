//! Byte accounting: every byte a connection causes the engine to hold is counted here, and
//! only here. [`ConnBudget`] is one connection's account, owned by its session on its parser
//! thread; the lane, the write buffer and the read buffer report to it, and the parser thread
//! asks it whether the connection may read, handle input or submit jobs.
//!
//! What is counted: parked request bytes, encoded replies waiting in the lane for their turn,
//! an estimate ([`REPLY_ESTIMATE`]) for each job with the executor (replaced by the exact size
//! once its reply is encoded into the write buffer), unsent output, and the read buffer's
//! capacity. Plain integers, single owner: no atomics on the request path. The parser thread
//! publishes each connection's change once per turn.

/// Bytes reserved at first for the reply of each job in flight, until the reply is encoded
/// and counted exactly. Most control-plane replies are far smaller. A connection's estimate
/// then rises to the largest reply it has received, so a client that asks for large replies
/// (`query-commands`) and does not read overshoots its budget by at most one in-flight
/// window of its first large replies.
pub(crate) const REPLY_ESTIMATE: usize = 512;

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
    /// Capacity of the read buffer.
    read_buffer: usize,
    /// [`ConnBudget::held`] as last published to the thread's total.
    published: usize,
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
            read_buffer: 0,
            published: 0,
        }
    }

    pub(crate) fn park(&mut self, bytes: usize) {
        self.parked += bytes;
    }

    pub(crate) fn unpark(&mut self, bytes: usize) {
        self.parked -= bytes;
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

    pub(crate) fn set_unsent(&mut self, bytes: usize) {
        self.unsent = bytes;
    }

    pub(crate) fn set_read_buffer(&mut self, bytes: usize) {
        self.read_buffer = bytes;
    }

    /// Everything this connection holds now.
    pub(crate) fn held(&self) -> usize {
        self.parked + self.replies() + self.read_buffer
    }

    /// Replies owed or unsent, estimates included.
    fn replies(&self) -> usize {
        self.ready + self.in_flight * self.estimate + self.unsent
    }

    /// Over budget: read no more, handle no more input.
    pub(crate) fn is_over(&self) -> bool {
        self.held() > self.limit
    }

    /// Whether one more job may go to the executor: only while its reply fits next to the
    /// replies already owed, so a client that does not read cannot make the engine produce
    /// replies without bound (parked requests alone never block submission: submitting is
    /// what frees them).
    pub(crate) fn may_submit(&self) -> bool {
        self.replies() + self.estimate <= self.limit
    }

    /// The change in held bytes since the last call, to add to the thread's total.
    pub(crate) fn publish(&mut self) -> isize {
        let held = self.held();
        let delta = held as isize - self.published as isize;
        self.published = held;
        delta
    }

    /// The connection closes: what it had published, to take off the thread's total.
    pub(crate) fn withdraw(&mut self) -> usize {
        std::mem::take(&mut self.published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_owed_block_submission_but_parked_requests_do_not() {
        let mut budget = ConnBudget::new(4 * REPLY_ESTIMATE);
        budget.park(100 * REPLY_ESTIMATE);
        assert!(budget.is_over());
        assert!(budget.may_submit(), "submitting frees parked bytes");
        budget.unpark(100 * REPLY_ESTIMATE);
        for _ in 0..3 {
            budget.reserve_reply();
        }
        assert!(budget.may_submit());
        budget.reserve_reply();
        assert!(!budget.may_submit(), "four replies reserved fill the budget");
        assert!(!budget.is_over());
        budget.set_unsent(1);
        assert!(budget.is_over());
        budget.release_reply(2 * REPLY_ESTIMATE);
        budget.set_unsent(0);
        assert_eq!(budget.held(), 3 * 2 * REPLY_ESTIMATE, "the estimate rose to the largest reply");
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
