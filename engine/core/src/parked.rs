//! The executor's side of the replicated log: replicated calls wait for their entry to come
//! back committed, and each connection's later in-band jobs wait behind its own waiting
//! calls, so every connection's replies keep their order and a local command sees the
//! effects of the replicated ones its connection sent before it. Connections never wait for
//! each other: a proposal stuck on a hung leader holds the replies of its own callers only.
//!
//! Replicated calls are numbered in arrival order (`seq`). A proposal carries consecutive
//! calls, so `first_seq + k` is the number of its call `k`: when this member's entry is
//! applied, the waiting call with that number runs right then (in log order, with the
//! arguments it was decoded with); a refusal fails it. Entries of other members, or of this
//! member's earlier runs, are replayed from the log. Jobs of no connection (events, shutdown,
//! a parser thread's exit) wait until every call that arrived before them is answered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use ooblane_wire::CommandError;

use crate::call::BoxedCall;
use crate::exec::Effects;
use crate::job::{ConnId, Job, Work};
use crate::registry::{Command, SnapshotForm};
use crate::replication::{
    LogLink, LoggedCommand, MAX_PROPOSAL, Opened, Origin, Position, Proposal, ToLog, Verdict,
};

/// A connection, across parser threads.
pub(crate) type ConnKey = (usize, ConnId);

/// A replicated call waiting for its entry.
struct Waiting<S, V> {
    conn: ConnKey,
    sent: Instant,
    /// Taken out only while it runs.
    call: Option<BoxedCall<S, V>>,
    /// Set once applied or refused: its reply may go once it reaches its connection's front.
    ran: Option<Effects>,
}

/// What waits in a connection's queue.
enum Item<S, V> {
    /// The replicated call with this number.
    Call(u64),
    /// A job that is not replicated, behind a waiting call of its connection.
    Job { sent: Instant, job: Job<S, V> },
}

/// Something ready to be answered or run, in its connection's order.
pub(crate) enum Parked<S, V> {
    /// A replicated call, applied or refused, with the effects its handler asked for.
    Answered { thread: usize, conn: ConnId, call: BoxedCall<S, V>, effects: Effects },
    /// A job that waited behind calls and may run now.
    Run { thread: usize, sent: Instant, job: Job<S, V> },
}

/// What [`ReplicatedLane::admit`] did with a job.
pub(crate) enum Admitted<S, V> {
    /// Nothing it must follow is waiting and it is not replicated: run it now.
    RunNow(Job<S, V>),
    /// Parked (and, if replicated, added to the next proposal).
    Parked,
}

/// Waiting calls, each connection's queue, and the proposal being gathered.
pub(crate) struct ReplicatedLane<S, V> {
    /// Calls by number from `front`; `None` once answered.
    waiting: VecDeque<Option<Waiting<S, V>>>,
    /// Number of `waiting[0]`.
    front: u64,
    /// Per connection with a waiting call: its calls and later jobs, in arrival order.
    queues: HashMap<ConnKey, VecDeque<Item<S, V>>>,
    /// Connections whose queue front may have become ready.
    touched: Vec<ConnKey>,
    /// Jobs of no connection, each with the number of the first call after it.
    control: VecDeque<(u64, usize, Instant, Job<S, V>)>,
    /// Calls gathered for the next proposal (consecutive numbers from `first_seq`).
    gathering: Vec<LoggedCommand>,
    first_seq: u64,
    origin: Origin,
    log: LogLink,
    /// Command names by registration index, for the log.
    names: Vec<String>,
    /// Every command, for replaying logged ones.
    pub(crate) commands: Arc<HashMap<String, Command<S, V>>>,
    pub(crate) snapshots: SnapshotForm<S, V>,
    pub(crate) position: Position,
}

impl<S, V> ReplicatedLane<S, V> {
    pub(crate) fn new(
        opened: &Opened,
        names: Vec<String>,
        commands: Arc<HashMap<String, Command<S, V>>>,
        snapshots: SnapshotForm<S, V>,
    ) -> Self {
        ReplicatedLane {
            waiting: VecDeque::new(),
            front: 0,
            queues: HashMap::new(),
            touched: Vec::new(),
            control: VecDeque::new(),
            gathering: Vec::new(),
            first_seq: 0,
            origin: opened.origin,
            log: opened.log.clone(),
            names,
            commands,
            snapshots,
            position: opened.position.clone(),
        }
    }

    fn next_seq(&self) -> u64 {
        self.front + self.waiting.len() as u64
    }

    /// Takes a job: replicated calls, and whatever must follow a waiting call, are parked.
    pub(crate) fn admit(&mut self, thread: usize, sent: Instant, job: Job<S, V>) -> Admitted<S, V> {
        let key = (thread, job.conn);
        match job.work {
            Work::Call(call) => match call.log_args() {
                Some(args) => {
                    self.park_call(key, sent, call, args);
                    Admitted::Parked
                }
                None => self.behind_own(key, sent, Job { conn: job.conn, work: Work::Call(call) }),
            },
            Work::Replica(_) => Admitted::RunNow(job),
            work @ (Work::Emit(_) | Work::Shutdown(_) | Work::ParserDone) => {
                let job = Job { conn: job.conn, work };
                if self.front == self.next_seq() {
                    return Admitted::RunNow(job);
                }
                self.control.push_back((self.next_seq(), thread, sent, job));
                Admitted::Parked
            }
        }
    }

    /// A replicated call: numbered, queued on its connection, added to the proposal.
    fn park_call(&mut self, key: ConnKey, sent: Instant, call: BoxedCall<S, V>, args: String) {
        let seq = self.next_seq();
        if self.gathering.is_empty() {
            self.first_seq = seq;
        }
        let name = self.names[call.command()].clone();
        self.gathering.push(LoggedCommand { name, args });
        self.waiting.push_back(Some(Waiting { conn: key, sent, call: Some(call), ran: None }));
        self.queues.entry(key).or_default().push_back(Item::Call(seq));
        if self.gathering.len() == MAX_PROPOSAL {
            self.propose();
        }
    }

    /// A job that is not replicated: behind its connection's waiting calls, if any.
    fn behind_own(&mut self, key: ConnKey, sent: Instant, job: Job<S, V>) -> Admitted<S, V> {
        match self.queues.get_mut(&key) {
            Some(queue) => {
                queue.push_back(Item::Job { sent, job });
                Admitted::Parked
            }
            None => Admitted::RunNow(job),
        }
    }

    /// Sends the calls gathered so far as one proposal.
    pub(crate) fn propose(&mut self) {
        if self.gathering.is_empty() {
            return;
        }
        let commands = std::mem::take(&mut self.gathering);
        let proposal = Proposal { origin: self.origin, first_seq: self.first_seq, commands };
        if let Err(ToLog::Propose(p)) = (self.log)(ToLog::Propose(proposal)) {
            // The replication side has stopped (shutdown): nothing will be applied.
            let verdict = Verdict::NotExecuted("the replicated log has stopped".into());
            self.refuse(p.first_seq, p.commands.len(), &verdict);
        }
    }

    fn slot(&mut self, seq: u64) -> Option<&mut Waiting<S, V>> {
        let index = seq.checked_sub(self.front)?;
        self.waiting.get_mut(usize::try_from(index).ok()?)?.as_mut()
    }

    /// Takes out the waiting call numbered `seq` to run it, if `origin` is this run and it
    /// has not run yet; [`ReplicatedLane::ran`] puts it back.
    pub(crate) fn take_waiting(
        &mut self,
        origin: Origin,
        seq: u64,
    ) -> Option<(Instant, BoxedCall<S, V>)> {
        if origin != self.origin {
            return None;
        }
        let slot = self.slot(seq)?;
        if slot.ran.is_some() {
            return None;
        }
        Some((slot.sent, slot.call.take()?))
    }

    /// Puts back the call numbered `seq`, run, with the effects its handler asked for.
    pub(crate) fn ran(&mut self, seq: u64, done: BoxedCall<S, V>, effects: Effects) {
        if let Some(slot) = self.slot(seq) {
            slot.call = Some(done);
            slot.ran = Some(effects);
            let conn = slot.conn;
            self.touched.push(conn);
        }
    }

    /// Fails the calls `first_seq..first_seq + count` that have not run: they will not be
    /// applied as their callers expect.
    pub(crate) fn refuse(&mut self, first_seq: u64, count: usize, verdict: &Verdict) {
        let err = match verdict {
            Verdict::Committed => return,
            Verdict::NotExecuted(why) => CommandError::generic(format!("not executed: {why}")),
            Verdict::Unknown(why) => CommandError::generic(format!(
                "outcome unknown: {why}; the command may or may not have been executed"
            )),
        };
        for seq in first_seq..first_seq + count as u64 {
            if let Some((_, mut call)) = self.take_waiting(self.origin, seq) {
                call.fail(err.clone());
                self.ran(seq, call, Effects::default());
            }
        }
    }

    /// Fails every call still waiting with an unknown outcome: after a snapshot was installed,
    /// which may or may not include their entries.
    pub(crate) fn forget_waiting(&mut self, why: &str) {
        let verdict = Verdict::Unknown(why.to_owned());
        // Calls still being gathered are not proposed yet: their entries are all to come.
        let end = if self.gathering.is_empty() { self.next_seq() } else { self.first_seq };
        self.refuse(self.front, (end - self.front) as usize, &verdict);
    }

    /// The next reply or job whose turn has come: the front of a connection whose front call
    /// has run, or a job of no connection once every call before it is answered.
    pub(crate) fn pop_ready(&mut self) -> Option<Parked<S, V>> {
        while let Some(&key) = self.touched.last() {
            match self.pop_front_of(key) {
                Some(ready) => return Some(ready),
                None => {
                    self.touched.pop();
                }
            }
        }
        self.trim();
        match self.control.front() {
            Some((before, ..)) if *before <= self.front => {
                let (_, thread, sent, job) = self.control.pop_front().expect("checked");
                Some(Parked::Run { thread, sent, job })
            }
            _ => None,
        }
    }

    /// Pops `key`'s front if its turn has come.
    fn pop_front_of(&mut self, key: ConnKey) -> Option<Parked<S, V>> {
        let queue = self.queues.get_mut(&key)?;
        if let Item::Call(seq) = queue.front()? {
            let index = usize::try_from(seq - self.front).ok()?;
            if self.waiting.get(index)?.as_ref().is_none_or(|w| w.ran.is_none()) {
                return None;
            }
        }
        let ready = match queue.pop_front()? {
            Item::Call(seq) => {
                let index = usize::try_from(seq - self.front).ok()?;
                let waiting = self.waiting.get_mut(index)?.take()?;
                let call = waiting.call.expect("a call that ran is back in its slot");
                let effects = waiting.ran.unwrap_or_default();
                Parked::Answered { thread: key.0, conn: key.1, call, effects }
            }
            Item::Job { sent, job } => Parked::Run { thread: key.0, sent, job },
        };
        if queue.is_empty() {
            self.queues.remove(&key);
        }
        Some(ready)
    }

    /// Drops answered calls from the front of the numbering.
    fn trim(&mut self) {
        while let Some(None) = self.waiting.front() {
            self.waiting.pop_front();
            self.front += 1;
        }
    }
}
