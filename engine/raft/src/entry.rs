//! What the replicated log holds: one entry per proposal (a batch of replicated commands
//! tagged with the member run that proposed it, as the core's port defines it), and the
//! openraft type configuration built on it.

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
pub(crate) type LogId = openraft::alias::LogIdOf<Raft>;
pub(crate) type Entry = openraft::alias::EntryOf<Raft>;
pub(crate) type Vote = openraft::alias::VoteOf<Raft>;
pub(crate) type StoredMembership = openraft::alias::StoredMembershipOf<Raft>;
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<Raft>;
/// The snapshot as openraft carries it: the state's bytes.
pub(crate) type SnapshotData = std::io::Cursor<Vec<u8>>;
/// A snapshot with its metadata.
pub(crate) type Snapshot = openraft::alias::SnapshotOf<Raft, SnapshotData>;
