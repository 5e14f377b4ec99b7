//! The public command API: an embedding user registers commands on a [`Registry`], each with
//! a lane, a typed argument decoder (serde) and a handler, then hands it to `Server::start`.
//!
//! In-band handlers run on the executor with `&mut S` (the state it owns, one at a time, in
//! one total order); allow-oob handlers run on whichever parser thread read the request, with
//! a shared view `&V`. Argument decoding and reply encoding both happen on parser threads:
//! the closures stored here erase the types, and an in-band request crosses to the executor
//! and back as one reusable typed call (`call.rs`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ooblane_wire::peek::Peeker;
use ooblane_wire::{CommandError, Empty, VersionInfo, VersionTriple};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use simd_json::Node;

use crate::call::{BoxedCall, LogArgs, TypedCall};
use crate::exec::{CommandInfo, Ctx, Exec, ServerInfo};
use crate::introspect::Schemas;
use crate::replication::{AdminRequest, StatusSource};

/// Where a command may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// On the executor, in order with every other in-band command.
    InBand,
    /// On the parser thread when sent with `exec-oob` (in-band when sent with `execute`).
    AllowOob,
}

/// Decodes arguments on the parser thread into a call for the executor, reusing a call from
/// the command's free list.
type Prepare<S, V> = Box<
    dyn Fn(
            &mut Peeker,
            Option<&[Node<'_>]>,
            &mut Vec<BoxedCall<S, V>>,
        ) -> Result<BoxedCall<S, V>, CommandError>
        + Send
        + Sync,
>;

/// Decodes, runs and encodes an allow-oob command on the parser thread, writing the result
/// value to the output buffer.
type RunOob<V> = Box<
    dyn Fn(&Ctx<'_, V>, &mut Peeker, Option<&[Node<'_>]>, &mut Vec<u8>) -> Result<(), CommandError>
        + Send
        + Sync,
>;

/// Re-runs a replicated command from its logged arguments (JSON text): on members that did
/// not receive it, and when the log is replayed at start. Its result is not sent anywhere.
pub(crate) type Replay<S, V> =
    Box<dyn Fn(&mut Exec<'_, S, V>, &str) -> Result<(), CommandError> + Send + Sync>;

/// How the executor's state is saved to and restored from a snapshot (replicated and durable
/// modes only; see [`Registry::snapshots`]).
pub(crate) struct SnapshotForm<S, V> {
    pub(crate) save: SaveState<S>,
    pub(crate) restore: RestoreState<S, V>,
}

/// Encodes the state for a snapshot.
pub(crate) type SaveState<S> = Box<dyn Fn(&S) -> Result<Vec<u8>, String> + Send + Sync>;
/// Decodes a snapshot's state, bringing the shared view up to date.
pub(crate) type RestoreState<S, V> = Box<dyn Fn(&[u8], &V) -> Result<S, String> + Send + Sync>;

/// Runs when shutdown starts, on the thread that starts it (shared by the server handle and
/// the executor, which both may).
pub(crate) type ShutdownHook<V> = Arc<dyn Fn(&V) + Send + Sync>;

/// What the executor does with a call of a command, in durable and cluster modes (without a
/// log every call simply runs at its turn).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Route {
    /// Runs on this member only, at its turn.
    Local,
    /// Logged, committed, then applied on every member (arguments: the call's `log_args`).
    Replicated,
    /// Runs on this member only, once it has applied everything committed before the call
    /// arrived: a linearizable read.
    Read,
    /// Handed to the log, whose answer decides the reply (its arguments, decoded from the
    /// call's `log_args`, say what to do).
    Admin(fn(&str) -> Result<AdminRequest, String>),
}

/// A registered command, types erased.
pub(crate) struct Command<S, V> {
    pub(crate) lane: Lane,
    /// What the executor does with its calls when there is a log.
    pub(crate) route: Route,
    /// Registration order: indexes per-command tables (each thread's call pool, the
    /// per-command counters in `stats`).
    pub(crate) index: usize,
    /// Builds the in-band call (also used for allow-oob commands sent with `execute`).
    pub(crate) prepare: Prepare<S, V>,
    /// Runs the command right here (allow-oob commands only).
    pub(crate) run_oob: Option<RunOob<V>>,
    /// Replicated commands only (`Registry::inband`): re-runs it from its logged arguments.
    /// In durable and cluster modes such a command goes through the replicated log; the
    /// others run on this member only.
    pub(crate) replay: Option<Replay<S, V>>,
}

/// The commands a server answers, with the state its executor will own and the view its
/// OOB handlers share.
///
/// In-band handlers get [`Exec`] (with `&mut S`) on the executor; allow-oob handlers get
/// [`Ctx`] (with `&V`) on the parser thread and must never block. Arguments and results are
/// serde types; see `docs/embedding.md` in the repository for the whole guide.
///
/// # Example
///
/// A counter: `add` runs in order on the executor and publishes the new value; `get` is
/// allow-oob and reads the published value at once, whatever the executor is doing.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicI64, Ordering};
///
/// use ooblane::{CommandError, NoArgs, Registry};
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct AddArgs {
///     delta: i64,
/// }
///
/// #[derive(Serialize, JsonSchema)]
/// struct Value {
///     value: i64,
/// }
///
/// let mut registry = Registry::new(0_i64, Arc::new(AtomicI64::new(0)));
/// registry
///     .inband("add", |exec, args: AddArgs| {
///         let total = exec.state().checked_add(args.delta);
///         let total = total.ok_or_else(|| CommandError::generic("counter overflow"))?;
///         *exec.state() = total;
///         exec.ctx().shared().store(total, Ordering::Release);
///         Ok(Value { value: total })
///     })
///     .allow_oob("get", |ctx, _: NoArgs| {
///         Ok(Value { value: ctx.shared().load(Ordering::Acquire) })
///     });
/// assert!(format!("{registry:?}").contains(r#"["add", "get"]"#));
/// ```
pub struct Registry<S, V> {
    pub(crate) state: S,
    pub(crate) shared: Arc<V>,
    pub(crate) commands: HashMap<String, Command<S, V>>,
    pub(crate) on_shutdown: Option<ShutdownHook<V>>,
    /// Argument, result and event types, for `query-qmp-schema` and `rpc.discover`.
    pub(crate) schemas: Schemas,
    /// The state's snapshot form, required by durable and cluster modes.
    pub(crate) snapshots: Option<SnapshotForm<S, V>>,
}

impl<S, V> fmt::Debug for Registry<S, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.commands.keys().collect();
        names.sort();
        f.debug_struct("Registry").field("commands", &names).finish_non_exhaustive()
    }
}

impl<S: Send + 'static, V: Send + Sync + 'static> Registry<S, V> {
    /// A registry with no commands yet.
    pub fn new(state: S, shared: Arc<V>) -> Self {
        Registry {
            state,
            shared,
            commands: HashMap::new(),
            on_shutdown: None,
            schemas: Schemas::default(),
            snapshots: None,
        }
    }

    /// Registers a replicated in-band command: `handler` runs on the executor, in total
    /// order. This is the default for commands that change the state: with a durable log
    /// (`--data`) or a cluster (`--cluster`), the command and its arguments are logged, made
    /// durable (and replicated to a majority) before it runs, and it runs on every member in
    /// the same order. It must therefore be **deterministic**: its effect on the state may
    /// depend only on the state and its arguments (no clock, no randomness, no I/O). Without
    /// a log it simply runs, as [`Registry::inband_local`] does. Commands that do not change
    /// the state, or must not run on other members, use [`Registry::inband_local`].
    ///
    /// `A` and `R` also derive `schemars::JsonSchema`: their schemas are recorded here, and
    /// `query-qmp-schema` ([`Ctx::qmp_schema`]) and `rpc.discover` ([`Ctx::openrpc`])
    /// describe the command from them. `A` derives `Serialize` too: it is how the arguments
    /// are logged.
    ///
    /// # Panics
    /// If a command of that name is already registered.
    pub fn inband<A, R, F>(&mut self, name: &str, handler: F) -> &mut Self
    where
        A: Serialize + DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + Send + 'static,
        F: Fn(&mut Exec<'_, S, V>, A) -> Result<R, CommandError> + Send + Sync + 'static,
    {
        self.schemas.command::<A, R>(name, false);
        let handler = Arc::new(handler);
        let replay_handler = Arc::clone(&handler);
        let replay: Replay<S, V> = Box::new(move |exec, args| {
            let args: A = serde_json::from_str(args).map_err(|e| {
                CommandError::generic(format!("logged arguments do not decode: {e}"))
            })?;
            replay_handler(exec, args).map(|_| ())
        });
        let prepare = self.prepare_with::<A, R, F>(handler, Some(crate::call::encode_json::<A>));
        self.add(name, Lane::InBand, Route::Replicated, prepare, None, Some(replay))
    }

    /// Registers an in-band command that runs on this member only, never logged nor
    /// replicated: commands that act on this process (`stall`, `quit`), anything that does
    /// not change the replicated state and need not see every other member's writes. It runs
    /// on the executor in total order with every other in-band command of this member, after
    /// the replicated commands its connection sent before it have been applied. Otherwise as
    /// [`Registry::inband`].
    ///
    /// # Panics
    /// If a command of that name is already registered.
    pub fn inband_local<A, R, F>(&mut self, name: &str, handler: F) -> &mut Self
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + Send + 'static,
        F: Fn(&mut Exec<'_, S, V>, A) -> Result<R, CommandError> + Send + Sync + 'static,
    {
        self.schemas.command::<A, R>(name, false);
        let prepare = self.prepare_with::<A, R, F>(Arc::new(handler), None);
        self.add(name, Lane::InBand, Route::Local, prepare, None, None)
    }

    /// Registers a **linearizable read**: an in-band command that runs on this member only,
    /// as [`Registry::inband_local`], but in a cluster it first waits until this member has
    /// applied every replicated command committed (acknowledged to anyone, through any
    /// member) before it arrived (Raft's read index, one round trip to the leader for all the
    /// reads of an executor round). So it never returns a state older than a write some
    /// client has already seen acknowledged. A member that cannot reach the leader in time
    /// refuses it (`not executed: ...`) rather than answer from a stale state.
    ///
    /// # Panics
    /// If a command of that name is already registered.
    pub fn inband_read<A, R, F>(&mut self, name: &str, handler: F) -> &mut Self
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + Send + 'static,
        F: Fn(&mut Exec<'_, S, V>, A) -> Result<R, CommandError> + Send + Sync + 'static,
    {
        self.schemas.command::<A, R>(name, false);
        let prepare = self.prepare_with::<A, R, F>(Arc::new(handler), None);
        self.add(name, Lane::InBand, Route::Read, prepare, None, None)
    }

    /// Registers an allow-oob command: with `exec-oob`, `handler` runs on the parser thread
    /// that read it, at once, on this member's view; with `execute`, on the executor in order.
    /// It sees only the shared view, so it must never block. `A` and `R` derive
    /// `schemars::JsonSchema`, as for [`Registry::inband`]; introspection marks the command
    /// `allow-oob`.
    ///
    /// # Panics
    /// If a command of that name is already registered.
    pub fn allow_oob<A, R, F>(&mut self, name: &str, handler: F) -> &mut Self
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + Send + 'static,
        F: Fn(&Ctx<'_, V>, A) -> Result<R, CommandError> + Send + Sync + 'static,
    {
        self.allow_oob_routed(name, Route::Local, handler)
    }

    /// Registers an allow-oob **read**: as [`Registry::allow_oob`], but sent with `execute`
    /// it is a linearizable read (see [`Registry::inband_read`]): in a cluster it waits until
    /// this member has applied every write committed before it arrived. Sent with `exec-oob`
    /// it answers at once from this member's view, which on a follower may lag the leader's
    /// by a heartbeat (`query-cluster`'s `applied` says how far it is).
    ///
    /// # Panics
    /// If a command of that name is already registered.
    pub fn allow_oob_read<A, R, F>(&mut self, name: &str, handler: F) -> &mut Self
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + Send + 'static,
        F: Fn(&Ctx<'_, V>, A) -> Result<R, CommandError> + Send + Sync + 'static,
    {
        self.allow_oob_routed(name, Route::Read, handler)
    }

    fn allow_oob_routed<A, R, F>(&mut self, name: &str, route: Route, handler: F) -> &mut Self
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + Send + 'static,
        F: Fn(&Ctx<'_, V>, A) -> Result<R, CommandError> + Send + Sync + 'static,
    {
        self.schemas.command::<A, R>(name, true);
        let handler = Arc::new(handler);
        let inband = Arc::clone(&handler);
        let prepare = self.prepare_with::<A, R, _>(
            Arc::new(move |exec: &mut Exec<'_, S, V>, args: A| inband(&exec.ctx, args)),
            None,
        );
        let run_oob: RunOob<V> = Box::new(move |ctx, peeker, args, out| {
            let args: A = peeker.decode(args).map_err(CommandError::invalid_arguments)?;
            let result = handler(ctx, args)?;
            serde_json::to_writer(out, &result)
                .map_err(|e| CommandError::generic(format!("cannot encode the result: {e}")))
        });
        self.add(name, Lane::AllowOob, route, prepare, Some(run_oob), None)
    }

    /// Registers `cluster-remove-member` (`{"node": N}`): in-band, on any member; the
    /// replicated log removes member N from the cluster and it is answered once that is
    /// committed, or with the log's refusal (N unknown, another change in progress, no
    /// quorum would be left). Without a log it answers an error saying so.
    ///
    /// # Panics
    /// If a command of that name is already registered.
    pub fn cluster_admin(&mut self) -> &mut Self {
        const NAME: &str = "cluster-remove-member";
        self.schemas.command::<RemoveMemberArgs, Empty>(NAME, false);
        let handler = |exec: &mut Exec<'_, S, V>, _: RemoveMemberArgs| match exec.ctx.info.cluster {
            Some(_) => Ok(Empty {}),
            None => {
                Err(CommandError::generic("this engine is not clustered (start it with --cluster)"))
            }
        };
        let encode = crate::call::encode_json::<RemoveMemberArgs>;
        let prepare =
            self.prepare_with::<RemoveMemberArgs, Empty, _>(Arc::new(handler), Some(encode));
        self.add(NAME, Lane::InBand, Route::Admin(RemoveMemberArgs::request), prepare, None, None)
    }

    /// The argument decoder of a command registered next, whose in-band handler is `handler`;
    /// `log` encodes its arguments for the replicated log (replicated commands only).
    fn prepare_with<A, R, H>(&self, handler: Arc<H>, log: Option<LogArgs<A>>) -> Prepare<S, V>
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        H: Fn(&mut Exec<'_, S, V>, A) -> Result<R, CommandError> + Send + Sync + 'static,
    {
        let index = self.commands.len();
        Box::new(move |peeker, args, free| {
            let args: A = peeker.decode(args).map_err(CommandError::invalid_arguments)?;
            Ok(TypedCall::<A, R, H>::prepare(index, &handler, log, args, free))
        })
    }

    /// Declares an event the server may emit and the type of its `data`, so that
    /// `query-qmp-schema` lists it (`meta-type` `event`, `arg-type` describing `T`). Emitting
    /// is unchanged ([`Exec::emit_event`], [`ServerHandle::emit_event`](crate::ServerHandle));
    /// an undeclared event can still be sent, it is just not advertised.
    ///
    /// # Panics
    /// If an event of that name is already declared.
    pub fn event<T: JsonSchema>(&mut self, name: &str) -> &mut Self {
        let declared = self.schemas.events.iter().any(|e| e.name == name);
        assert!(!declared, "event '{name}' declared twice");
        self.schemas.event::<T>(name);
        self
    }

    /// Gives the state a snapshot form, which durable (`--data`) and cluster (`--cluster`)
    /// modes require: `save` encodes the state (any bytes: serde_json is the simple choice),
    /// `restore` decodes it and also brings the shared view up to date with it (what the
    /// in-band handlers would have published). A member saves a snapshot every so many log
    /// entries, restores the latest one at start (then replays the log after it), and
    /// installs the leader's when it has fallen too far behind.
    pub fn snapshots(
        &mut self,
        save: impl Fn(&S) -> Result<Vec<u8>, String> + Send + Sync + 'static,
        restore: impl Fn(&[u8], &V) -> Result<S, String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.snapshots = Some(SnapshotForm { save: Box::new(save), restore: Box::new(restore) });
        self
    }

    /// Called when shutdown starts, before the server drains, e.g. to release a handler that
    /// blocks the executor so that draining can finish: from the thread that asks for it
    /// (signal handler, [`ServerHandle`](crate::ServerHandle)), and on the executor when an
    /// in-band command asks for it ([`Exec::request_shutdown`], `quit`), so a blocking command
    /// queued behind `quit` cannot hold the exit. It may run more than once: make it
    /// idempotent.
    pub fn on_shutdown(&mut self, hook: impl Fn(&V) + Send + Sync + 'static) -> &mut Self {
        self.on_shutdown = Some(Arc::new(hook));
        self
    }

    fn add(
        &mut self,
        name: &str,
        lane: Lane,
        route: Route,
        prepare: Prepare<S, V>,
        run_oob: Option<RunOob<V>>,
        replay: Option<Replay<S, V>>,
    ) -> &mut Self {
        assert!(
            !name.is_empty() && name != ooblane_wire::qmp::CAPABILITIES,
            "reserved name '{name}'"
        );
        assert!(!self.commands.contains_key(name), "command '{name}' registered twice");
        let index = self.commands.len();
        let command = Command { lane, route, index, prepare, run_oob, replay };
        self.commands.insert(name.to_owned(), command);
        self
    }

    /// The facts handlers may report about the server this registry will run in.
    pub(crate) fn server_info(&self, package: String, cluster: Option<StatusSource>) -> ServerInfo {
        let openrpc = crate::openrpc::document(&self.schemas, &package, env!("CARGO_PKG_VERSION"));
        ServerInfo {
            commands: self.command_infos(),
            qmp_schema: crate::introspect::schema_info(&self.schemas),
            openrpc,
            cluster,
            version: VersionInfo { qemu: VersionTriple { micro: 0, minor: 1, major: 0 }, package },
        }
    }

    /// Each command's route, in registration order (each command's `index`).
    pub(crate) fn routes(&self) -> Vec<Route> {
        let mut routes = vec![Route::Local; self.commands.len()];
        for command in self.commands.values() {
            routes[command.index] = command.route;
        }
        routes
    }

    /// Command names in registration order (each command's `index`).
    pub(crate) fn metric_names(&self) -> Vec<String> {
        let mut names = vec![String::new(); self.commands.len()];
        for (name, command) in &self.commands {
            names[command.index].clone_from(name);
        }
        names
    }

    /// `query-commands` material: every command, sorted, with `qmp_capabilities`.
    pub(crate) fn command_infos(&self) -> Vec<CommandInfo> {
        let mut infos: Vec<CommandInfo> = self
            .commands
            .iter()
            .map(|(name, c)| CommandInfo {
                name: name.clone(),
                allow_oob: c.lane == Lane::AllowOob,
            })
            .chain([CommandInfo { name: ooblane_wire::qmp::CAPABILITIES.into(), allow_oob: false }])
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }
}

/// The arguments of `cluster-remove-member`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveMemberArgs {
    /// The id of the member to remove.
    pub node: u64,
}

impl RemoveMemberArgs {
    /// The log's request, from the arguments as the call logged them.
    fn request(args: &str) -> Result<AdminRequest, String> {
        let args: RemoveMemberArgs = serde_json::from_str(args).map_err(|e| e.to_string())?;
        Ok(AdminRequest::RemoveMember { node: args.node })
    }
}
