//! A follower's pipelined connection to one leader: proposals go out in order, the leader
//! answers each in order (success shows as the entry applied here: a committed proposal is
//! handed to [`Unapplied`] until it is, so it is settled even if it never is). A
//! task of its own reads the answers, and settles every proposal still in flight as
//! "outcome unknown" (it was sent, so it may have been appended) as soon as any of these
//! happens, then drops the connection:
//!
//! - the oldest proposal's deadline passes (the leader hangs, or the network dropped it);
//! - this member learns of another leader, or of none (an election): the old leader's fate
//!   for them is unknowable in time, and new proposals go to the new leader at once;
//! - the connection fails or the leader closes it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ooblane::replication::{ExecutorLink, Verdict};
use openraft::async_runtime::WatchReceiver;
use parking_lot::Mutex;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::entry::Proposal;
use crate::network::{self, Request, Response};
use crate::state_machine::Node;
use crate::ticket::{Ticket, Unapplied, refuse};

/// How long connecting to the leader may take (loopback or a LAN: refused or made at once;
/// a partition drops the SYN and this is what it costs).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Proposals forwarded and not yet answered, oldest first.
type InFlight = Arc<Mutex<VecDeque<Ticket>>>;

/// The way to one leader; connects on first use and after any failure.
pub(crate) struct Forwarder {
    leader: u64,
    addr: SocketAddr,
    raft: Node,
    link: ExecutorLink,
    unapplied: Arc<Unapplied>,
    conn: Option<ForwardConn>,
}

struct ForwardConn {
    writer: OwnedWriteHalf,
    in_flight: InFlight,
    dead: Arc<AtomicBool>,
}

impl Forwarder {
    pub(crate) fn new(
        leader: u64,
        addr: SocketAddr,
        raft: Node,
        link: ExecutorLink,
        unapplied: Arc<Unapplied>,
    ) -> Self {
        Forwarder { leader, addr, raft, link, unapplied, conn: None }
    }

    /// Sends `proposal` on the connection (opened if needed); hands it back if the leader
    /// cannot be reached, so it was certainly not sent.
    pub(crate) async fn send(
        &mut self,
        proposal: Proposal,
        ticket: Ticket,
    ) -> Result<(), (Proposal, Ticket, std::io::Error)> {
        if self.conn.as_ref().is_some_and(|c| c.dead.load(Ordering::Acquire)) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let timeout = CONNECT_TIMEOUT
                .min(ticket.deadline.saturating_duration_since(tokio::time::Instant::now()));
            match network::connect(self.addr, timeout).await {
                Ok(stream) => self.conn = Some(self.start(stream)),
                Err(e) => return Err((proposal, ticket, e)),
            }
        }
        let conn = self.conn.as_mut().expect("connected above");
        let deadline = ticket.deadline;
        conn.in_flight.lock().push_back(ticket);
        let frame = Request::Forward(proposal);
        let written =
            tokio::time::timeout_at(deadline, network::write_frame(&mut conn.writer, &frame));
        let failed = match written.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("lost the leader connection: {e}")),
            Err(_) => Some(format!("the leader (member {}) took no more data", self.leader)),
        };
        if let Some(why) = failed {
            conn.dead.store(true, Ordering::Release);
            fail_all(&conn.in_flight, &self.link, &why);
        } else if conn.dead.load(Ordering::Acquire) {
            // The reader ended (and settled what it found) while this one was being added.
            fail_all(&conn.in_flight, &self.link, "the leader connection ended");
        }
        Ok(())
    }

    fn start(&self, stream: tokio::net::TcpStream) -> ForwardConn {
        let (reader, writer) = stream.into_split();
        let in_flight: InFlight = Arc::default();
        let dead = Arc::new(AtomicBool::new(false));
        let verdicts = Verdicts {
            leader: self.leader,
            raft: self.raft.clone(),
            in_flight: Arc::clone(&in_flight),
            link: self.link.clone(),
            unapplied: Arc::clone(&self.unapplied),
        };
        let watch = Arc::clone(&dead);
        tokio::spawn(async move {
            let why = verdicts.read(reader).await;
            watch.store(true, Ordering::Release);
            fail_all(&verdicts.in_flight, &verdicts.link, &why);
        });
        ForwardConn { writer, in_flight, dead }
    }
}

/// The reading side of one connection.
struct Verdicts {
    leader: u64,
    raft: Node,
    in_flight: InFlight,
    link: ExecutorLink,
    unapplied: Arc<Unapplied>,
}

impl Verdicts {
    /// Reads the leader's verdicts in order, refusing what it refused, until something ends
    /// the connection; says what.
    async fn read(&self, mut reader: OwnedReadHalf) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            let oldest = self.in_flight.lock().front().map(|t| t.deadline);
            let expired = async {
                match oldest {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = network::read_frame::<_, Response>(&mut reader) => {
                    if let Err(why) = self.answered(frame) {
                        return why;
                    }
                }
                () = expired => {
                    return format!("the leader (member {}) did not answer within {} s", self.leader, crate::ticket::DEADLINE.as_secs());
                }
                changed = metrics.changed() => {
                    let leader = metrics.borrow_watched().current_leader;
                    if changed.is_err() || leader != Some(self.leader) {
                        return match leader {
                            Some(new) => format!("leadership moved from member {} to member {new}", self.leader),
                            None => format!("member {} stopped leading (an election is in progress)", self.leader),
                        };
                    }
                }
            }
        }
    }

    /// One answer from the leader; `Err` with why the connection must end.
    fn answered(&self, frame: std::io::Result<Option<Response>>) -> Result<(), String> {
        match frame {
            Ok(Some(Response::Forward(verdict))) => {
                let Some(ticket) = self.in_flight.lock().pop_front() else {
                    return Err("the leader answered a proposal never sent".to_owned());
                };
                match verdict {
                    Verdict::Committed => self.unapplied.committed(ticket, self.leader),
                    refused => refuse(&self.link, ticket, refused),
                }
                Ok(())
            }
            Ok(Some(_)) => Err("the leader sent an answer of the wrong kind".to_owned()),
            Ok(None) => Err("the leader closed the connection".to_owned()),
            Err(e) => Err(format!("lost the leader connection: {e}")),
        }
    }
}

/// Everything still in flight on a connection that ended: sent, so its fate is unknown.
fn fail_all(in_flight: &InFlight, link: &ExecutorLink, why: &str) {
    let lost: Vec<Ticket> = in_flight.lock().drain(..).collect();
    for ticket in lost {
        refuse(link, ticket, Verdict::Unknown(why.to_owned()));
    }
}
