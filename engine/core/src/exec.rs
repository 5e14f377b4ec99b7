//! What a handler sees: [`Ctx`] (the shared view, statistics, facts about the server) for
//! every handler, and [`Exec`] (the executor's state, plus events and shutdown to ask for)
//! for in-band ones. Built per call on the thread that runs the handler; allocates nothing.

use ooblane_wire::{Event, VersionInfo};
use schemars::JsonSchema;
use serde::Serialize;

use crate::introspect::SchemaInfo;
use crate::openrpc::OpenRpc;
use crate::replication::{ClusterStatus, StatusSource};
use crate::stats::{Stats, StatsSnapshot};

/// One entry of `query-commands`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct CommandInfo {
    /// Command name.
    pub name: String,
    /// Whether it may be sent with `exec-oob`.
    #[serde(rename = "allow-oob")]
    pub allow_oob: bool,
}

/// What every handler may look at: the shared view, server statistics, the command list.
#[derive(Debug)]
pub struct Ctx<'a, V> {
    pub(crate) shared: &'a V,
    pub(crate) stats: &'a Stats,
    pub(crate) info: &'a ServerInfo,
}

impl<V> Ctx<'_, V> {
    /// The read-mostly state shared between the executor and OOB handlers.
    pub fn shared(&self) -> &V {
        self.shared
    }

    /// A snapshot of the server's counters, queue depths and latency percentiles.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Every command the server answers, `qmp_capabilities` included.
    pub fn commands(&self) -> &[CommandInfo] {
        &self.info.commands
    }

    /// The server's version, as in the greeting.
    pub fn version(&self) -> &VersionInfo {
        &self.info.version
    }

    /// The `query-qmp-schema` list, generated from the registry when the server started.
    pub fn qmp_schema(&self) -> &[SchemaInfo] {
        &self.info.qmp_schema
    }

    /// The OpenRPC document `rpc.discover` returns, from the same registry.
    pub fn openrpc(&self) -> &OpenRpc {
        &self.info.openrpc
    }

    /// This member's view of the replicated log (`query-cluster`): `None` unless the server
    /// runs durable or clustered ([`Server::start_replicated`](crate::Server::start_replicated)).
    /// A durable single node reports itself as the leader of a cluster of one.
    pub fn cluster(&self) -> Option<ClusterStatus> {
        self.info.cluster.as_ref().map(|status| status())
    }
}

/// Facts about the running server that handlers may report.
pub(crate) struct ServerInfo {
    pub(crate) commands: Vec<CommandInfo>,
    pub(crate) version: VersionInfo,
    pub(crate) qmp_schema: Vec<SchemaInfo>,
    pub(crate) openrpc: OpenRpc,
    pub(crate) cluster: Option<StatusSource>,
}

impl std::fmt::Debug for ServerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerInfo").field("commands", &self.commands.len()).finish_non_exhaustive()
    }
}

/// What an in-band handler gets: the executor's state, plus the means to emit events and to
/// ask for shutdown (both take effect after the handler returns, events before its reply).
#[derive(Debug)]
pub struct Exec<'a, S, V> {
    pub(crate) state: &'a mut S,
    pub(crate) ctx: Ctx<'a, V>,
    pub(crate) effects: &'a mut Effects,
}

impl<S, V> Exec<'_, S, V> {
    /// The state the executor owns.
    pub fn state(&mut self) -> &mut S {
        self.state
    }

    /// Shared view, statistics and server facts.
    pub fn ctx(&self) -> &Ctx<'_, V> {
        &self.ctx
    }

    /// Sends an event to every negotiated session (before this command's reply).
    pub fn emit_event(&mut self, name: impl Into<String>, data: Option<serde_json::Value>) {
        self.effects.events.push(Event::now(name.into(), data));
    }

    /// Starts graceful shutdown once this command has been answered; `reason` goes into the
    /// `SHUTDOWN` event (QEMU uses `host-qmp-quit` for `quit`).
    pub fn request_shutdown(&mut self, reason: &'static str) {
        self.effects.shutdown = Some(reason);
    }
}

/// Side effects an in-band handler asked for.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) events: Vec<Event>,
    pub(crate) shutdown: Option<&'static str>,
}
