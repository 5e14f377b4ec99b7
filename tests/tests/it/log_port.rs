//! The replication port driven by a test backend that holds every proposal until the test
//! applies or refuses it: the executor's side alone, exactly. Each connection's replies keep
//! their order and wait only for that connection's own replicated calls; a call stuck in the
//! log never holds another connection's replies.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use ooblane::Error;
use ooblane::replication::{
    ClusterStatus, ExecutorLink, Opened, Origin, Position, Proposal, ReplicatedLog, RunningLog,
    ToExecutor, ToLog, Verdict,
};
use serde_json::json;
use tests::{Client, READ_TIMEOUT, generic_error, start_replicated_with, test_config};

/// A log that hands every proposal to the test and does only what the test says.
struct HeldLog {
    proposals: Sender<Proposal>,
    executor: Arc<Mutex<Option<ExecutorLink>>>,
}

#[derive(Debug)]
struct Held;

impl RunningLog for Held {}

impl ReplicatedLog for HeldLog {
    fn open(&mut self) -> Result<Opened, Error> {
        let proposals = Mutex::new(self.proposals.clone());
        Ok(Opened {
            snapshot: None,
            position: Position::new(()),
            origin: Origin { node: 1, run: 1 },
            log: Arc::new(move |ToLog::Propose(p)| {
                proposals.lock().unwrap().send(p).map_err(|e| ToLog::Propose(e.0))
            }),
            status: Arc::new(|| ClusterStatus::starting(1)),
        })
    }

    fn start(self: Box<Self>, executor: ExecutorLink) -> Result<Box<dyn RunningLog>, Error> {
        *self.executor.lock().unwrap() = Some(executor);
        Ok(Box::new(Held))
    }
}

/// The test's side: the proposals, and the way to the executor.
struct Control {
    proposals: Receiver<Proposal>,
    executor: Arc<Mutex<Option<ExecutorLink>>>,
}

impl Control {
    fn next_proposal(&self) -> Proposal {
        self.proposals.recv_timeout(READ_TIMEOUT).expect("a proposal")
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
    let log = HeldLog { proposals: tx, executor: Arc::clone(&executor) };
    (log, Control { proposals: rx, executor })
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
    b.send(&format!("{ADD}{READ}"));
    let applied = control.next_proposal();
    assert_eq!((applied.first_seq, applied.commands.len()), (1, 1));

    // B's add is applied while A's is still in the log: B is answered, in order.
    control.apply(applied);
    assert_eq!(b.recv(), json!({"return": {"value": 1}, "id": "add"}));
    assert_eq!(b.recv(), json!({"return": {"value": 1}, "id": "read"}));
    // A has nothing yet: its next message is the OOB reply it asks for now.
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
fn a_connection_without_waiting_calls_runs_local_commands_at_once() {
    let (log, control) = held_log();
    let server = start_replicated_with(test_config(), log);
    let mut a = Client::negotiated(&server.addr);
    let mut b = Client::negotiated(&server.addr);
    a.send(ADD);
    let held = control.next_proposal();
    // B never sent a replicated call: its in-band read runs now, not after A's add.
    assert_eq!(b.request(READ), json!({"return": {"value": 0}, "id": "read"}));
    control.apply(held);
    assert_eq!(a.recv(), json!({"return": {"value": 1}, "id": "add"}));
}
