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
//!
//! Two more kinds of call wait in their connection's queue: linearizable reads, behind a
//! read barrier that the log releases once this member has applied everything committed
//! before it (one barrier for all the reads of an executor round), and administrative calls
//! (`cluster-remove-member`), which run once the log says the change is done.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use ooblane_wire::CommandError;

use crate::call::BoxedCall;
use crate::exec::Effects;
use crate::job::{ConnId, Job, Work};
use crate::registry::{Command, Route, SnapshotForm};
use crate::replication::{
    AdminRequest, LogLink, LoggedCommand, MAX_PROPOSAL, Opened, Origin, Position, Proposal, ToLog,
    Verdict,
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
    /// A linearizable read, behind this read barrier.
    Read { barrier: u64, sent: Instant, job: Job<S, V> },
    /// An administrative call, until the log answers this ticket.
    Admin { ticket: u64, sent: Instant, job: Job<S, V> },
}

/// Reads or an administrative call waiting for the log's answer, and the connections they
/// wait in.
#[derive(Default)]
struct Gate {
    conns: Vec<ConnKey>,
    /// The log's answer, once it came.
    result: Option<Result<(), String>>,
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
    /// Read barriers asked for or being gathered, by number.
    barriers: HashMap<u64, Gate>,
    /// The barrier this round's reads wait behind (asked for at the end of the round).
    next_barrier: u64,
    /// Administrative calls waiting for the log, by ticket.
    admins: HashMap<u64, Gate>,
    next_ticket: u64,
    /// Each command's route, by registration index.
    routes: Vec<Route>,
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
        routes: Vec<Route>,
        commands: Arc<HashMap<String, Command<S, V>>>,
        snapshots: SnapshotForm<S, V>,
    ) -> Self {
        ReplicatedLane {
            waiting: VecDeque::new(),
            front: 0,
            queues: HashMap::new(),
            touched: Vec::new(),
            control: VecDeque::new(),
            barriers: HashMap::new(),
            next_barrier: 0,
            admins: HashMap::new(),
            next_ticket: 0,
            routes,
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
            Work::Call(call) => match self.routes[call.command()] {
                Route::Replicated => {
                    let args = call.log_args().expect("a replicated call logs its arguments");
                    self.park_call(key, sent, call, args);
                    Admitted::Parked
                }
                Route::Local => {
                    self.behind_own(key, sent, Job { conn: job.conn, work: Work::Call(call) })
                }
                Route::Read => {
                    self.park_read(key, sent, Job { conn: job.conn, work: Work::Call(call) });
                    Admitted::Parked
                }
                Route::Admin(decode) => {
                    let request = match call.log_args() {
                        Some(args) => decode(&args).map_err(|why| format!("bad arguments: {why}")),
                        None => Err("no arguments".to_owned()),
                    };
                    self.park_admin(
                        key,
                        sent,
                        request,
                        Job { conn: job.conn, work: Work::Call(call) },
                    );
                    Admitted::Parked
                }
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

    /// A linearizable read: behind this round's barrier, and its connection's calls.
    fn park_read(&mut self, key: ConnKey, sent: Instant, job: Job<S, V>) {
        let barrier = self.next_barrier;
        self.barriers.entry(barrier).or_default().conns.push(key);
        self.queues.entry(key).or_default().push_back(Item::Read { barrier, sent, job });
    }

    /// An administrative call: handed to the log at once, answered when the log says.
    fn park_admin(
        &mut self,
        key: ConnKey,
        sent: Instant,
        request: Result<AdminRequest, String>,
        job: Job<S, V>,
    ) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let mut gate = Gate { conns: vec![key], result: None };
        match request {
            Ok(request) => {
                if (self.log)(ToLog::Admin { ticket, request }).is_err() {
                    gate.result = Some(Err("not executed: the replicated log has stopped".into()));
                }
            }
            Err(why) => gate.result = Some(Err(format!("not executed: {why}"))),
        }
        self.admins.insert(ticket, gate);
        self.queues.entry(key).or_default().push_back(Item::Admin { ticket, sent, job });
        self.touched.push(key);
    }

    /// The log's answer for read barrier `barrier`.
    pub(crate) fn read_done(&mut self, barrier: u64, result: Result<(), String>) {
        if let Some(gate) = self.barriers.get_mut(&barrier) {
            self.touched.extend(gate.conns.iter().copied());
            gate.result = Some(result);
        }
    }

    /// The log's answer for administrative call `ticket`.
    pub(crate) fn admin_done(&mut self, ticket: u64, result: Result<(), String>) {
        if let Some(gate) = self.admins.get_mut(&ticket) {
            self.touched.extend(gate.conns.iter().copied());
            gate.result = Some(result);
        }
    }

    /// End of an executor round: asks for the barrier of this round's reads, and sends the
    /// calls gathered as one proposal.
    pub(crate) fn end_round(&mut self) {
        self.propose();
        let barrier = self.next_barrier;
        if self.barriers.get(&barrier).is_some_and(|gate| gate.result.is_none()) {
            self.next_barrier += 1;
            if (self.log)(ToLog::Read { barrier }).is_err() {
                self.read_done(barrier, Err("not executed: the replicated log has stopped".into()));
            }
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
        let ready = match queue.front()? {
            Item::Call(seq) => {
                let index = usize::try_from(seq - self.front).ok()?;
                self.waiting.get(index)?.as_ref().is_some_and(|w| w.ran.is_some())
            }
            Item::Job { .. } => true,
            Item::Read { barrier, .. } => self.barriers.get(barrier)?.result.is_some(),
            Item::Admin { ticket, .. } => self.admins.get(ticket)?.result.is_some(),
        };
        if !ready {
            return None;
        }
        let item = queue.pop_front()?;
        if queue.is_empty() {
            self.queues.remove(&key);
        }
        Some(match item {
            Item::Call(seq) => {
                let index = usize::try_from(seq - self.front).ok()?;
                let waiting = self.waiting.get_mut(index)?.take()?;
                let call = waiting.call.expect("a call that ran is back in its slot");
                let effects = waiting.ran.unwrap_or_default();
                Parked::Answered { thread: key.0, conn: key.1, call, effects }
            }
            Item::Job { sent, job } => Parked::Run { thread: key.0, sent, job },
            Item::Read { barrier, sent, job } => {
                let result = gate_result(&mut self.barriers, barrier, key);
                released(key, sent, job, result)
            }
            Item::Admin { ticket, sent, job } => {
                let result = gate_result(&mut self.admins, ticket, key);
                released(key, sent, job, result)
            }
        })
    }

    /// Drops answered calls from the front of the numbering.
    fn trim(&mut self) {
        while let Some(None) = self.waiting.front() {
            self.waiting.pop_front();
            self.front += 1;
        }
    }
}

/// The answer of gate `id` for one of its connections, dropping the gate after its last.
fn gate_result(gates: &mut HashMap<u64, Gate>, id: u64, key: ConnKey) -> Result<(), String> {
    let Some(gate) = gates.get_mut(&id) else {
        return Err("not executed: lost track of it".into());
    };
    let result = gate.result.clone().unwrap_or(Err("not executed: no answer".into()));
    if let Some(at) = gate.conns.iter().position(|c| *c == key) {
        gate.conns.swap_remove(at);
    }
    if gate.conns.is_empty() {
        gates.remove(&id);
    }
    result
}

/// A read or administrative call the log has answered: it runs, or fails with the log's
/// description (`not executed: ...` or `outcome unknown: ...`).
fn released<S, V>(
    key: ConnKey,
    sent: Instant,
    job: Job<S, V>,
    result: Result<(), String>,
) -> Parked<S, V> {
    match (result, job.work) {
        (Ok(()), work) => Parked::Run { thread: key.0, sent, job: Job { conn: job.conn, work } },
        (Err(why), Work::Call(mut call)) => {
            call.fail(CommandError::generic(why));
            Parked::Answered { thread: key.0, conn: key.1, call, effects: Effects::default() }
        }
        (Err(_), work) => Parked::Run { thread: key.0, sent, job: Job { conn: job.conn, work } },
    }
}
