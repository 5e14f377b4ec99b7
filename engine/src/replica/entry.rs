//! What the replicated log holds: one entry per executor batch of replicated commands, tagged
//! with the member run that proposed it, and the openraft type configuration built on it.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// The member run that proposed an entry: its node id and a number chosen at each start, so a
/// restarted member never mistakes an entry of its previous life for one of its own calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Origin {
    pub(crate) node: u64,
    pub(crate) run: u64,
}

/// A batch of replicated commands, in the order the proposing member's executor took them.
/// Command `k` of the batch is that member's call number `first_seq + k`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Proposal {
    pub(crate) origin: Origin,
    pub(crate) first_seq: u64,
    pub(crate) commands: Vec<LoggedCommand>,
}

/// One command as logged: its registered name and its arguments as JSON text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LoggedCommand {
    pub(crate) name: String,
    pub(crate) args: String,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} command(s) from node {} run {} seq {}",
            self.commands.len(),
            self.origin.node,
            self.origin.run,
            self.first_seq
        )
    }
}

openraft::declare_raft_types!(
    /// The replicated log's types: proposals in, nothing back (each member's executor answers
    /// its own callers when it applies their entry).
    pub(crate) Raft:
        D = Proposal,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// openraft's names for the types of this configuration.
pub(crate) type LogId = openraft::LogId<u64>;
pub(crate) type Entry = openraft::Entry<Raft>;
pub(crate) type StoredMembership = openraft::StoredMembership<u64, openraft::BasicNode>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<u64, openraft::BasicNode>;
pub(crate) type StorageError = openraft::StorageError<u64>;
