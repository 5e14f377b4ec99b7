//! What a member is told at start: where its data lives, who the members are, who it is.
//! Plain data, validated once when the log is opened.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ooblane::Error;

/// Durable (`--data`) or replicated (`--cluster`) operation of one member.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// Where this member keeps its log and snapshot (created if missing).
    pub data: PathBuf,
    /// Every member's id and member-to-member address; empty for a durable single node.
    pub members: BTreeMap<u64, SocketAddr>,
    /// This member's id (a key of `members`; 1 for a durable single node).
    pub node: u64,
    /// Take a snapshot (and drop the log before it) every this many log entries.
    pub snapshot_every: u64,
    /// Join a running cluster (`--join`): `members` lists its members and this one; it asks
    /// them to add it instead of forming a cluster. Ignored once this member's log holds a
    /// membership (it has joined before).
    pub join: bool,
}

impl RaftConfig {
    /// Log entries between snapshots by default.
    pub const DEFAULT_SNAPSHOT_EVERY: u64 = 10_000;

    /// A durable single node keeping its log in `data`.
    pub fn durable(data: impl Into<PathBuf>) -> RaftConfig {
        RaftConfig {
            data: data.into(),
            members: BTreeMap::new(),
            node: 1,
            snapshot_every: Self::DEFAULT_SNAPSHOT_EVERY,
            join: false,
        }
    }

    /// Checks the membership once, at start.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if !self.members.is_empty() && !self.members.contains_key(&self.node) {
            return Err(Error::Config(format!(
                "--node {} is not one of the --cluster members",
                self.node
            )));
        }
        if self.join && self.members.len() < 2 {
            return Err(Error::Config(
                "--join needs --cluster to list the running members and this one".into(),
            ));
        }
        if !self.join && (self.members.len() == 2 || self.members.len() > 7) {
            return Err(Error::Config(format!(
                "a cluster forms with 1, 3, 5 or 7 members (odd, so a majority survives a loss), \
                 not {}; to grow a running cluster, start the new member with --join",
                self.members.len()
            )));
        }
        if self.snapshot_every == 0 {
            return Err(Error::Config("snapshot_every must be > 0".into()));
        }
        Ok(())
    }

    pub(crate) fn clustered(&self) -> bool {
        !self.members.is_empty()
    }
}
