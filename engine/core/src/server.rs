//! Starting and stopping a server: binds every listener on the caller's thread (so errors
//! come back from `start`), wires the threads (`wiring.rs`), spawns them where the layout
//! (`placement.rs`) puts them, and returns a [`ServerHandle`] that reports addresses, emits
//! events and shuts down gracefully.
//!
//! Shutdown (from the handle, a signal handler holding a [`ShutdownTrigger`], or an in-band
//! `quit`) goes through the executor's queue, so it is ordered after every job already
//! queued: the executor sends `SHUTDOWN`, each parser thread stops reading, answers what it
//! has read, and exits; the executor exits after the last one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ooblane_wire::Dialect;
use ooblane_wire::Event;

use crate::config::Config;
use crate::executor::Executor;
use crate::job::{Controller, Work};
use crate::listener::{self, ListenSocket, Listener};
use crate::parser::{ExitNotice, ParserThread};
use crate::placement::Layout;
use crate::registry::{Registry, ShutdownHook};
use crate::replication::{ExecutorLink, Opened, ReplicatedLog, RunningLog};
use crate::stats::{Stats, StatsSnapshot};
use crate::wiring::{ParserParts, Wiring};
use crate::{Address, Error};

/// Entry point of the engine.
#[derive(Debug)]
pub struct Server;

/// A request to the running server from outside its threads.
enum Control {
    Shutdown(&'static str),
    Emit(Event),
}

/// Sends controls into the executor queue; types erased so handles are not generic.
type ControlFn = Arc<dyn Fn(Control) + Send + Sync>;

impl Server {
    /// Binds the configured listeners, starts the threads and returns at once.
    ///
    /// Bind errors come back here ([`Error::Bind`]), as do inconsistent configurations
    /// ([`Error::Config`]). Dropping the returned handle shuts the server down gracefully.
    ///
    /// # Example
    ///
    /// The demo command set on an ephemeral port, one QMP exchange, then shutdown:
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use std::net::TcpStream;
    /// use std::time::Duration;
    ///
    /// use ooblane::{Address, Config, Server};
    ///
    /// let config = Config {
    ///     qmp: vec!["tcp:127.0.0.1:0".parse()?],
    ///     threads: 1,
    ///     pin: false,
    ///     ..Config::default()
    /// };
    /// let server = Server::start(config, ooblane::demo::registry())?;
    /// let Address::Tcp(addr) = server.qmp_addrs()[0].clone() else { unreachable!() };
    ///
    /// let mut stream = TcpStream::connect(addr)?;
    /// stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    /// let mut lines = BufReader::new(stream.try_clone()?).lines();
    /// assert!(lines.next().unwrap()?.starts_with(r#"{"QMP":"#));
    /// stream.write_all(br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#)?;
    /// assert_eq!(lines.next().unwrap()?, r#"{"return":{}}"#);
    /// stream.write_all(br#"{"exec-oob":"ping","id":1}"#)?;
    /// assert_eq!(lines.next().unwrap()?, r#"{"return":{},"id":1}"#);
    ///
    /// server.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start<S, V>(config: Config, registry: Registry<S, V>) -> Result<ServerHandle, Error>
    where
        S: Send + 'static,
        V: Send + Sync + 'static,
    {
        Self::launch(config, registry, None)
    }

    /// As [`Server::start`], with replicated in-band commands going through `log` (a durable
    /// or Raft-replicated log, e.g. `ooblane-raft`'s): each is durable (and on a majority of
    /// the cluster) before it runs and is answered. The registry must give the state a
    /// snapshot form ([`Registry::snapshots`]), or this returns [`Error::Config`].
    pub fn start_replicated<S, V>(
        config: Config,
        registry: Registry<S, V>,
        log: impl ReplicatedLog + 'static,
    ) -> Result<ServerHandle, Error>
    where
        S: Send + 'static,
        V: Send + Sync + 'static,
    {
        Self::launch(config, registry, Some(Box::new(log)))
    }

    fn launch<S, V>(
        config: Config,
        mut registry: Registry<S, V>,
        log: Option<Box<dyn ReplicatedLog>>,
    ) -> Result<ServerHandle, Error>
    where
        S: Send + 'static,
        V: Send + Sync + 'static,
    {
        let config = config.validated()?;
        let layout = Layout::for_this_machine(config.threads, config.pin);
        let mut bound = Bound::new(layout.threads());
        bound.bind(&config.qmp, Dialect::Qmp)?;
        bound.bind(&config.jsonrpc, Dialect::JsonRpc)?;
        let opened = match log {
            Some(mut log) => {
                let opened = log.open()?;
                restore_snapshot(&mut registry, &opened)?;
                Some((log, opened))
            }
            None => None,
        };
        let wiring = Wiring::new(
            registry,
            layout.threads(),
            config.limits,
            config.package.clone(),
            opened.as_ref().map(|(_, opened)| opened),
        )
        .map_err(Error::Start)?;
        let Wiring { parsers, executor, controller, stats, shared, on_shutdown } = wiring;
        let listeners = std::mem::take(&mut bound.per_thread);
        let executor = spawn_executor(executor, &layout, &config)?;
        let log = match opened {
            Some((log, _)) => Some(log.start(executor_link(controller.clone()))?),
            None => None,
        };
        let mut threads = spawn_parsers(parsers, listeners, &layout, &config, &controller)?;
        threads.push(executor);
        bound.log(&layout, spin(&layout, config.spin), spin(&layout, config.await_outcomes));
        Ok(ServerHandle {
            qmp: bound.qmp,
            jsonrpc: bound.jsonrpc,
            unix_paths: bound.unix_paths,
            control: control_fn(controller, shared, on_shutdown),
            stats,
            threads,
            log,
        })
    }
}

/// Durable and cluster modes: the state starts from the latest snapshot (the log after it is
/// replayed once the log starts).
fn restore_snapshot<S, V>(registry: &mut Registry<S, V>, opened: &Opened) -> Result<(), Error>
where
    S: Send + 'static,
    V: Send + Sync + 'static,
{
    let Some(form) = &registry.snapshots else {
        return Err(Error::Config(
            "durable and cluster modes need the registry's snapshot form (Registry::snapshots)"
                .into(),
        ));
    };
    if let Some(bytes) = &opened.snapshot {
        registry.state = (form.restore)(bytes, &registry.shared)
            .map_err(|e| Error::Config(format!("cannot restore the snapshot: {e}")))?;
    }
    Ok(())
}

/// How the replicated log reaches the executor: through its job queue, in order.
fn executor_link<S: Send + 'static, V: Send + Sync + 'static>(
    controller: Controller<S, V>,
) -> ExecutorLink {
    Arc::new(move |message| controller.send(Work::Replica(Box::new(message))))
}

/// How long a thread may poll before it sleeps, `limit` as configured: only where the
/// layout gives the executor a core of its own.
fn spin(layout: &Layout, limit: Duration) -> Duration {
    if layout.may_spin() { limit } else { Duration::ZERO }
}

/// Starts each parser thread on its core with its listeners.
fn spawn_parsers<S: Send + 'static, V: Send + Sync + 'static>(
    parsers: Vec<ParserParts<S, V>>,
    listeners: Vec<Vec<Listener>>,
    layout: &Layout,
    config: &Config,
    controller: &Controller<S, V>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let mut handles = Vec::with_capacity(parsers.len() + 1);
    for ((i, parts), listeners) in parsers.into_iter().enumerate().zip(listeners) {
        let parser = ParserThread::new(parts.poll, listeners, parts.worker)
            .map_err(Error::Start)?
            .with_await_outcomes(spin(layout, config.await_outcomes));
        let notice = ExitNotice(controller.clone());
        handles.push(spawn(format!("engine-parser-{i}"), layout.parsers[i], move || {
            let _notice = notice;
            parser.run();
        })?);
    }
    Ok(handles)
}

/// Starts the executor, on its own core when the layout gives it one (and only then spinning
/// before it parks).
fn spawn_executor<S: Send + 'static, V: Send + Sync + 'static>(
    executor: Executor<S, V>,
    layout: &Layout,
    config: &Config,
) -> Result<JoinHandle<()>, Error> {
    let executor = executor.with_spin(spin(layout, config.spin));
    let nice = config.executor_nice;
    spawn("engine-executor".into(), layout.executor, move || {
        lower_priority(nice);
        executor.run();
    })
}

fn spawn(
    name: String,
    core: Option<core_affinity::CoreId>,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Some(core) = core
                && !core_affinity::set_for_current(core)
            {
                tracing::warn!(core = core.id, "cannot pin thread");
            }
            body();
        })
        .map_err(Error::Start)
}

/// Sets the calling thread's nice value (unprivileged when raising it).
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    let thread = Some(rustix::thread::gettid());
    if let Err(e) = rustix::process::setpriority_process(thread, nice) {
        tracing::warn!(nice, error = %e, "cannot set the executor's nice value");
    }
}

fn control_fn<S: Send + 'static, V: Send + Sync + 'static>(
    controller: Controller<S, V>,
    shared: Arc<V>,
    on_shutdown: Option<ShutdownHook<V>>,
) -> ControlFn {
    Arc::new(move |control| {
        let work = match control {
            Control::Shutdown(reason) => {
                if let Some(hook) = &on_shutdown {
                    hook(&shared);
                }
                Work::Shutdown(reason)
            }
            Control::Emit(event) => Work::Emit(Box::new(event)),
        };
        controller.send(work);
    })
}

/// Listeners bound for every thread, and what to report and clean up.
struct Bound {
    per_thread: Vec<Vec<Listener>>,
    qmp: Vec<Address>,
    jsonrpc: Vec<Address>,
    unix_paths: Vec<PathBuf>,
}

impl Bound {
    fn new(threads: usize) -> Bound {
        Bound {
            per_thread: (0..threads).map(|_| Vec::new()).collect(),
            qmp: Vec::new(),
            jsonrpc: Vec::new(),
            unix_paths: Vec::new(),
        }
    }

    /// Binds `addrs` for every thread, speaking `dialect`.
    fn bind(&mut self, addrs: &[Address], dialect: Dialect) -> Result<(), Error> {
        for address in addrs {
            let fail = |source| Error::Bind { address: address.clone(), source };
            let bound = match address {
                Address::Tcp(addr) => {
                    listener::ensure_tcp_port_free(*addr).map_err(fail)?;
                    Address::Tcp(self.bind_tcp(*addr, dialect).map_err(fail)?)
                }
                Address::Unix(path) => {
                    let std_listener = listener::bind_unix(path).map_err(fail)?;
                    self.unix_paths.push(path.clone());
                    for listeners in &mut self.per_thread {
                        let socket = listener::clone_unix(&std_listener).map_err(fail)?;
                        listeners.push(Listener { socket, dialect });
                    }
                    address.clone()
                }
            };
            match dialect {
                Dialect::Qmp => self.qmp.push(bound),
                Dialect::JsonRpc => self.jsonrpc.push(bound),
            }
        }
        Ok(())
    }

    /// Reports where the server listens and how its threads are laid out.
    fn log(&self, layout: &Layout, spin: Duration, await_outcomes: Duration) {
        let threads = layout.threads();
        for addr in &self.qmp {
            tracing::info!(%addr, threads, "serving QMP");
        }
        for addr in &self.jsonrpc {
            tracing::info!(%addr, threads, "serving JSON-RPC");
        }
        tracing::info!(layout = layout.describe(spin, await_outcomes), "thread layout");
    }

    /// One `SO_REUSEPORT` socket per thread; the first picks the port when 0 is asked.
    fn bind_tcp(&mut self, mut addr: SocketAddr, dialect: Dialect) -> std::io::Result<SocketAddr> {
        for listeners in &mut self.per_thread {
            let socket = listener::bind_tcp(addr)?;
            addr = socket.local_addr()?;
            listeners.push(Listener { socket: ListenSocket::Tcp(socket), dialect });
        }
        Ok(addr)
    }
}

/// Cloneable, thread-safe way to start graceful shutdown (e.g. from a signal handler).
#[derive(Clone)]
pub struct ShutdownTrigger(ControlFn);

impl std::fmt::Debug for ShutdownTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShutdownTrigger")
    }
}

impl ShutdownTrigger {
    /// Starts graceful shutdown; `reason` goes into the `SHUTDOWN` event (QEMU sends
    /// `host-signal` for signals). Does nothing if shutdown already began.
    pub fn shutdown(&self, reason: &'static str) {
        (self.0)(Control::Shutdown(reason));
    }
}

/// A running server. Dropping it shuts the server down gracefully and waits for it.
pub struct ServerHandle {
    qmp: Vec<Address>,
    jsonrpc: Vec<Address>,
    unix_paths: Vec<PathBuf>,
    control: ControlFn,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<()>>,
    /// The replicated log; stopped after the server threads.
    log: Option<Box<dyn RunningLog>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("qmp", &self.qmp)
            .field("jsonrpc", &self.jsonrpc)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Bound QMP addresses, with the actual port where port 0 was asked.
    pub fn qmp_addrs(&self) -> &[Address] {
        &self.qmp
    }

    /// Bound JSON-RPC addresses.
    pub fn jsonrpc_addrs(&self) -> &[Address] {
        &self.jsonrpc
    }

    /// Sends an event to every negotiated session, in order with in-band commands.
    pub fn emit_event(&self, name: impl Into<String>, data: Option<serde_json::Value>) {
        (self.control)(Control::Emit(Event::now(name.into(), data)));
    }

    /// Server statistics, as `query-stats` reports them.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The live counters and histograms behind [`ServerHandle::stats`], for an exporter that
    /// reads them on its own thread (a metrics endpoint): [`Stats::scrape`].
    pub fn stats_source(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// A trigger for graceful shutdown that can be moved to another thread.
    pub fn trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger(Arc::clone(&self.control))
    }

    /// Shuts down gracefully (answering every request already read) and waits.
    pub fn shutdown(mut self) {
        self.stop("host-signal");
    }

    /// Waits until the server stops by itself (`quit`, or a [`ShutdownTrigger`]).
    pub fn wait(mut self) {
        self.join();
    }

    fn stop(&mut self, reason: &'static str) {
        if !self.threads.is_empty() {
            (self.control)(Control::Shutdown(reason));
            self.join();
        }
    }

    fn join(&mut self) {
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("an engine thread panicked");
            }
        }
        for path in self.unix_paths.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        self.log = None;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop("host-signal");
    }
}
