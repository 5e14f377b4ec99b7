//! A new member joining a running cluster (`--join`): it asks the members it was given, one
//! after the other, until the leader has added it (as a learner caught up from the log or a
//! snapshot, then as a voter). A member that is not the leader says so and the next one is
//! asked; a round over all of them that fails is tried again after a pause, with progress in
//! the log. A member whose log already holds a membership has joined before and asks nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use crate::network::{Peer, Response, Rpc};
use crate::reach::Reach;
use crate::state_machine::Node;

/// How long one member may take to answer a request to join (the leader answers once the new
/// member has caught up as a learner and votes).
const ANSWER_WITHIN: Duration = Duration::from_secs(90);

/// Pause between two rounds over the members.
const PAUSE: Duration = Duration::from_millis(500);

/// Asks `members` (id and member-to-member address) to add member `me` at `addr`, until it
/// votes or Raft stops. Meanwhile this member says it is joining when it refuses a request
/// (its log may already hold a snapshot's membership, which does not name it yet).
pub(crate) async fn join(
    raft: Node,
    me: u64,
    addr: SocketAddr,
    members: Vec<(u64, SocketAddr)>,
    reach: Arc<Reach>,
) {
    reach.set_joining(true);
    ask_until_voting(&raft, me, addr, &members, &reach).await;
    // The leader answers once it has committed this member as a voter, which may be before
    // this member's own log holds the entry that names it: until then it is still joining.
    until_named(&raft, me).await;
    reach.set_joining(false);
}

/// Returns once the membership in this member's log names `me`, or Raft stops.
async fn until_named(raft: &Node, me: u64) {
    let mut metrics = raft.metrics();
    while metrics.borrow_watched().membership_config.membership().get_node(&me).is_none() {
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Asks each member in turn, round after round, until one says this member was added or the
/// log says it votes.
async fn ask_until_voting(
    raft: &Node,
    me: u64,
    addr: SocketAddr,
    members: &[(u64, SocketAddr)],
    reach: &Arc<Reach>,
) {
    let mut round = 0;
    while !votes(raft, me) {
        round += 1;
        for &(node, at) in members.iter().filter(|(node, _)| *node != me) {
            let mut peer = Peer::new(node, at, Arc::clone(reach));
            let rpc = Rpc::Join { node: me, addr: addr.to_string() };
            match peer.ask(rpc, ANSWER_WITHIN).await {
                Ok(Response::Join(Ok(()))) => {
                    tracing::info!(node = me, via = node, "joined the cluster");
                    return;
                }
                Ok(Response::Join(Err(why))) => {
                    tracing::info!(node = me, asked = node, round, answer = why, "join: not yet");
                }
                Ok(_) => tracing::warn!(asked = node, "join: an answer of the wrong kind"),
                Err(e) => {
                    tracing::info!(node = me, asked = node, round, error = %e, "join: no answer")
                }
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Whether member `me` votes, as its own log says.
fn votes(raft: &Node, me: u64) -> bool {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    m.membership_config.membership().voter_ids().any(|v| v == me)
}
