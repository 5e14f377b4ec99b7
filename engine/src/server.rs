//! Starting and stopping a server: binds every listener on the caller's thread (so errors
//! come back from `start`), spawns the pinned parser threads and the executor, and returns a
//! [`ServerHandle`] that reports addresses, emits events and shuts down gracefully.
//!
//! Shutdown (from the handle, a signal handler holding a [`ShutdownTrigger`], or an in-band
//! `quit`) goes through the executor's queue, so it is ordered after every job already
//! queued: the executor sends `SHUTDOWN`, each parser thread stops reading, answers what it
//! has read, and exits; the executor exits after the last one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::{Poll, Waker};

use crate::config::Config;
use crate::conn::Dialect;
use crate::dispatch::Worker;
use crate::executor::Executor;
use crate::job::{ConnId, Job, Mailbox, Work};
use crate::listener::{self, ListenSocket, Listener};
use crate::metrics::MetricsEndpoint;
use crate::parser::{ExitNotice, ParserThread, WAKER};
use crate::registry::{Event, Registry, ServerInfo, ShutdownHook};
use crate::stats::{Stats, StatsSnapshot};
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
    pub fn start<S, V>(config: Config, registry: Registry<S, V>) -> Result<ServerHandle, Error>
    where
        S: Send + 'static,
        V: Send + Sync + 'static,
    {
        let config = config.validated()?;
        let threads = config.threads;
        let mut bound = Bound::new(threads);
        bound.bind(&config.qmp, Dialect::Qmp)?;
        bound.bind(&config.jsonrpc, Dialect::JsonRpc)?;
        let mut polls = Vec::with_capacity(threads);
        let mut mailboxes = Vec::with_capacity(threads);
        let mut inboxes = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = Poll::new().map_err(Error::Start)?;
            let waker = Waker::new(poll.registry(), WAKER).map_err(Error::Start)?;
            let (mailbox, inbox) = Mailbox::new(waker);
            polls.push(poll);
            mailboxes.push(mailbox);
            inboxes.push(inbox);
        }
        let mailboxes: Arc<[Mailbox]> = mailboxes.into();
        let (jobs, jobs_rx) = crossbeam_channel::bounded(config.limits.queue_capacity);
        let stats = Arc::new(Stats::with_commands(threads, registry.metric_names()));
        let metrics =
            config.metrics.as_ref().map(|a| MetricsEndpoint::start(a, Arc::clone(&stats)));
        let metrics = metrics.transpose()?;
        let info = Arc::new(ServerInfo::new(&registry, config.package.clone()));
        let Registry { state, shared, commands, on_shutdown, .. } = registry;
        let commands = Arc::new(commands);
        let cores =
            if config.pin { core_affinity::get_core_ids().unwrap_or_default() } else { vec![] };

        let mut handles = Vec::with_capacity(threads + 1);
        let per_thread = bound.per_thread;
        for (i, ((poll, inbox), listeners)) in
            polls.into_iter().zip(inboxes).zip(per_thread).enumerate()
        {
            let worker = Worker::new(
                i,
                Arc::clone(&commands),
                Arc::clone(&shared),
                Arc::clone(&stats),
                Arc::clone(&info),
                jobs.clone(),
                config.limits,
            );
            let parser = ParserThread::new(poll, listeners, inbox, Arc::clone(&mailboxes), worker)
                .map_err(Error::Start)?;
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let notice = ExitNotice { thread: i, jobs: jobs.clone() };
            handles.push(spawn(format!("engine-parser-{i}"), core, move || {
                let _notice = notice;
                parser.run();
            })?);
        }
        let executor =
            Executor::new(state, Arc::clone(&shared), jobs_rx, mailboxes, Arc::clone(&stats), info);
        // The executor gets a core of its own only if one is left over.
        let core = cores.get(threads).copied();
        let nice = config.executor_nice;
        handles.push(spawn("engine-executor".into(), core, move || {
            lower_priority(nice);
            executor.run();
        })?);

        let control = control_fn(jobs, shared, on_shutdown);
        for addr in &bound.qmp {
            tracing::info!(%addr, threads, "serving QMP");
        }
        for addr in &bound.jsonrpc {
            tracing::info!(%addr, threads, "serving JSON-RPC");
        }
        Ok(ServerHandle {
            qmp: bound.qmp,
            jsonrpc: bound.jsonrpc,
            unix_paths: bound.unix_paths,
            control,
            stats,
            threads: handles,
            metrics,
        })
    }
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
    jobs: Sender<Job<S, V>>,
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
            Control::Emit(event) => Work::Emit(event),
        };
        let job =
            Job { thread: 0, conn: ConnId { key: 0, serial: 0 }, enqueued: Instant::now(), work };
        // Fails only once the executor has exited, when there is nothing left to stop.
        let _ = jobs.send(job);
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
    /// Stopped when the handle drops, after the server threads.
    metrics: Option<MetricsEndpoint>,
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

    /// The bound Prometheus endpoint ([`Config::metrics`]), with the actual port where port 0
    /// was asked.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::addr)
    }

    /// Sends an event to every negotiated session, in order with in-band commands.
    pub fn emit_event(&self, name: impl Into<String>, data: Option<serde_json::Value>) {
        (self.control)(Control::Emit(Event::now(name.into(), data)));
    }

    /// Server statistics, as `query-stats` reports them.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
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
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop("host-signal");
    }
}
