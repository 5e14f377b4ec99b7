//! The replication port driven by a test backend that holds every request (proposals, read
//! barriers, administrative requests) until the test answers it: the executor's side alone,
//! exactly. Each connection's replies keep their order and wait only for that connection's own
//! calls; a call stuck in the log never holds another connection's replies; reads wait for
//! their barrier; an administrative call is answered as the log says.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use ooblane::Error;
use ooblane::replication::{
    AdminRequest, ClusterStatus, ExecutorLink, Opened, Origin, Position, Proposal, ReplicatedLog,
    RunningLog, ToExecutor, ToLog, Verdict,
};
use serde_json::json;
use tests::{Client, READ_TIMEOUT, generic_error, start_replicated_with, test_config};

/// A log that hands every request to the test and does only what the test says.
struct HeldLog {
    requests: Sender<ToLog>,
    executor: Arc<Mutex<Option<ExecutorLink>>>,
}

#[derive(Debug)]
struct Held;

impl RunningLog for Held {}

impl ReplicatedLog for HeldLog {
    fn open(&mut self) -> Result<Opened, Error> {
        let requests = Mutex::new(self.requests.clone());
        Ok(Opened {
            snapshot: None,
            position: Position::new(()),
            origin: Origin { node: 1, run: 1 },
            log: Arc::new(move |request| requests.lock().unwrap().send(request).map_err(|e| e.0)),
            status: Arc::new(|| ClusterStatus::starting(1)),
        })
    }

    fn start(self: Box<Self>, executor: ExecutorLink) -> Result<Box<dyn RunningLog>, Error> {
        *self.executor.lock().unwrap() = Some(executor);
        Ok(Box::new(Held))
    }
}

/// The test's side: the requests, and the way to the executor.
struct Control {
    requests: Receiver<ToLog>,
    executor: Arc<Mutex<Option<ExecutorLink>>>,
}

impl Control {
    fn next(&self) -> ToLog {
        self.requests.recv_timeout(READ_TIMEOUT).expect("a request from the executor")
    }

    fn next_proposal(&self) -> Proposal {
        match self.next() {
            ToLog::Propose(proposal) => proposal,
            other => panic!("expected a proposal, got {other:?}"),
        }
    }

    fn next_barrier(&self) -> u64 {
        match self.next() {
            ToLog::Read { barrier } => barrier,
            other => panic!("expected a read barrier, got {other:?}"),
        }
    }

    fn read_done(&self, barrier: u64, result: Result<(), String>) {
        self.send(ToExecutor::ReadDone { barrier, result });
    }

    fn send(&self, message: ToExecutor) {
        let link = self.executor.lock().unwrap().clone().expect("started");
        link(message);
    }

    fn apply(&self, proposal: Proposal) {
        let (done, applied) = channel();
        let done = Box::new(move |()| done.send(()).unwrap());
        self.send(ToExecutor::Apply { entries: vec![proposal], position: Position::new(()), done });
        applied.recv_timeout(READ_TIMEOUT).expect("applied");
    }
}

fn held_log() -> (HeldLog, Control) {
    let (tx, rx) = channel();
    let executor = Arc::new(Mutex::new(None));
    let log = HeldLog { requests: tx, executor: Arc::clone(&executor) };
    (log, Control { requests: rx, executor })
}

const ADD: &str = r#"{"execute":"counter-add","arguments":{"delta":1},"id":"add"}"#;
const READ: &str = r#"{"execute":"query-counter","id":"read"}"#;
const PING: &str = r#"{"exec-oob":"ping","id":"ping"}"#;

#[test]
fn a_call_held_in_the_log_holds_its_own_connection_only() {
    let (log, control) = held_log();
    let server = start_replicated_with(test_config(), log);
    let mut a = Client::negotiated(&server.addr);
    let mut b = Client::negotiated(&server.addr);

    a.send(&format!("{ADD}{READ}"));
    let held = control.next_proposal();
    assert_eq!((held.first_seq, held.commands.len()), (0, 1));
    assert_eq!(held.commands[0].name, "counter-add");
    let a_barrier = control.next_barrier();
    b.send(&format!("{ADD}{READ}"));
    let applied = control.next_proposal();
    assert_eq!((applied.first_seq, applied.commands.len()), (1, 1));
    let b_barrier = control.next_barrier();
    assert!(b_barrier > a_barrier);

    // B's add is applied and its read released while A's add is still in the log: B is
    // answered, in order.
    control.apply(applied);
    control.read_done(b_barrier, Ok(()));
    assert_eq!(b.recv(), json!({"return": {"value": 1}, "id": "add"}));
    assert_eq!(b.recv(), json!({"return": {"value": 1}, "id": "read"}));
    // A has nothing yet, its read released or not: its next message is the OOB reply.
    control.read_done(a_barrier, Ok(()));
    assert_eq!(a.request(PING), json!({"return": {}, "id": "ping"}));

    // A's add is refused: its error, then its read, which sees B's add only.
    control.send(ToExecutor::Refuse {
        first_seq: 0,
        count: 1,
        verdict: Verdict::NotExecuted("the test held it".into()),
    });
    assert_eq!(a.recv(), generic_error("not executed: the test held it", Some(json!("add"))));
    assert_eq!(a.recv(), json!({"return": {"value": 1}, "id": "read"}));
}

#[test]
fn a_read_waits_for_its_barrier_only_and_a_refused_barrier_refuses_it() {
    let (log, control) = held_log();
    let server = start_replicated_with(test_config(), log);
    let mut a = Client::negotiated(&server.addr);
    let mut b = Client::negotiated(&server.addr);
    a.send(ADD);
    let held = control.next_proposal();
    // B sent no replicated call: its read waits for its barrier, not for A's add.
    b.send(READ);
    let barrier = control.next_barrier();
    assert_eq!(b.request(PING), json!({"return": {}, "id": "ping"}), "the read is held");
    control.read_done(barrier, Ok(()));
    assert_eq!(b.recv(), json!({"return": {"value": 0}, "id": "read"}));
    control.apply(held);
    assert_eq!(a.recv(), json!({"return": {"value": 1}, "id": "add"}));
    // A barrier the log cannot establish refuses its reads with the log's description.
    b.send(READ);
    let refused = control.next_barrier();
    control.read_done(refused, Err("not executed: no leader in time".into()));
    assert_eq!(b.recv(), generic_error("not executed: no leader in time", Some(json!("read"))));
}

#[test]
fn an_administrative_call_is_answered_as_the_log_says() {
    let (log, control) = held_log();
    let server = start_replicated_with(test_config(), log);
    let mut a = Client::negotiated(&server.addr);
    let remove = |node: u64| {
        format!(r#"{{"execute":"cluster-remove-member","arguments":{{"node":{node}}},"id":"rm"}}"#)
    };
    a.send(&remove(2));
    let ToLog::Admin { ticket, request } = control.next() else { panic!("an admin request") };
    assert_eq!(request, AdminRequest::RemoveMember { node: 2 });
    assert_eq!(a.request(PING), json!({"return": {}, "id": "ping"}), "held until the log answers");
    control.send(ToExecutor::AdminDone { ticket, result: Ok(()) });
    assert_eq!(a.recv(), json!({"return": {}, "id": "rm"}));
    a.send(&remove(7));
    let ToLog::Admin { ticket, .. } = control.next() else { panic!("an admin request") };
    let why = "not executed: member 7 is not in the cluster";
    control.send(ToExecutor::AdminDone { ticket, result: Err(why.into()) });
    assert_eq!(a.recv(), generic_error(why, Some(json!("rm"))));
}
