//! What the replicated log holds: one entry per proposal (a batch of replicated commands
//! tagged with the member run that proposed it, as the core's port defines it), and the
//! openraft type configuration built on it.

use std::io::Cursor;

pub(crate) use ooblane::replication::Proposal;

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
