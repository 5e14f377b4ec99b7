//! The executor's side of the replicated log: replicated calls wait, in arrival order, for
//! their entry to come back committed; everything the executor takes after a waiting call
//! waits behind it, so replies keep their order and a local command sees the effects of the
//! replicated ones received before it.
//!
//! Each waiting item has a position (a counter of everything parked). A proposal carries the
//! calls of one run of consecutive replicated items, so `first_seq + k` is the position of
//! its call `k`: when this member's entry is applied, the waiting call at that position runs
//! right then (in log order, with the arguments it was decoded with); a refusal fails it.
//! Entries of other members, or of this member's earlier runs, are replayed from the log.

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

/// A job the executor took but cannot run or answer yet.
pub(crate) enum Parked<S, V> {
    /// A replicated call waiting for its entry (`ran` once applied or refused).
    Replicated {
        thread: usize,
        conn: ConnId,
        sent: Instant,
        /// Taken out only while it runs.
        call: Option<BoxedCall<S, V>>,
        ran: Option<Effects>,
    },
    /// Anything else taken after a waiting call: runs when it reaches the front.
    Behind { thread: usize, sent: Instant, job: Job<S, V> },
}

/// What [`ReplicatedLane::admit`] did with a job.
pub(crate) enum Admitted<S, V> {
    /// Nothing waits before it and it is not replicated: run it now.
    RunNow(Job<S, V>),
    /// Parked (and, if replicated, added to the next proposal).
    Parked,
}

/// Parked jobs, and the proposal being gathered.
pub(crate) struct ReplicatedLane<S, V> {
    parked: VecDeque<Parked<S, V>>,
    /// Position of `parked[0]`.
    front: u64,
    /// Calls gathered for the next proposal (consecutive positions from `first_seq`).
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
            commands,
            snapshots,
            parked: VecDeque::new(),
            front: 0,
            gathering: Vec::new(),
            first_seq: 0,
            origin: opened.origin,
            log: opened.log.clone(),
            names,
            position: opened.position.clone(),
        }
    }

    fn next_position(&self) -> u64 {
        self.front + self.parked.len() as u64
    }

    /// Takes a job: replicated calls and whatever comes after a waiting call are parked.
    pub(crate) fn admit(&mut self, thread: usize, sent: Instant, job: Job<S, V>) -> Admitted<S, V> {
        let job = match job.work {
            Work::Call(call) => match call.log_args() {
                Some(args) => {
                    if self.gathering.is_empty() {
                        self.first_seq = self.next_position();
                    }
                    let name = self.names[call.command()].clone();
                    self.gathering.push(LoggedCommand { name, args });
                    let (conn, call) = (job.conn, Some(call));
                    self.parked.push_back(Parked::Replicated {
                        thread,
                        conn,
                        sent,
                        call,
                        ran: None,
                    });
                    if self.gathering.len() == MAX_PROPOSAL {
                        self.propose();
                    }
                    return Admitted::Parked;
                }
                None => Job { conn: job.conn, work: Work::Call(call) },
            },
            work => Job { conn: job.conn, work },
        };
        if self.parked.is_empty() || matches!(job.work, Work::Replica(_)) {
            return Admitted::RunNow(job);
        }
        self.propose();
        self.parked.push_back(Parked::Behind { thread, sent, job });
        Admitted::Parked
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

    fn slot(&mut self, origin: Origin, seq: u64) -> Option<&mut Parked<S, V>> {
        if origin != self.origin || seq < self.front {
            return None;
        }
        self.parked.get_mut((seq - self.front) as usize)
    }

    /// Takes out the waiting call at `seq` to run it, if `origin` is this run and it has not
    /// run yet; [`ReplicatedLane::ran`] puts it back.
    pub(crate) fn take_waiting(
        &mut self,
        origin: Origin,
        seq: u64,
    ) -> Option<(Instant, BoxedCall<S, V>)> {
        match self.slot(origin, seq)? {
            Parked::Replicated { call, ran: None, sent, .. } => Some((*sent, call.take()?)),
            _ => None,
        }
    }

    /// Puts back the call at `seq`, run, with the effects its handler asked for.
    pub(crate) fn ran(&mut self, seq: u64, done: BoxedCall<S, V>, effects: Effects) {
        let origin = self.origin;
        if let Some(Parked::Replicated { call, ran, .. }) = self.slot(origin, seq) {
            *call = Some(done);
            *ran = Some(effects);
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
        let end = if self.gathering.is_empty() { self.next_position() } else { self.first_seq };
        self.refuse(self.front, (end - self.front) as usize, &verdict);
    }

    /// The front job if it can be answered or run now.
    pub(crate) fn pop_ready(&mut self) -> Option<Parked<S, V>> {
        match self.parked.front()? {
            Parked::Replicated { ran: None, .. } => None,
            _ => {
                self.front += 1;
                self.parked.pop_front()
            }
        }
    }
}
