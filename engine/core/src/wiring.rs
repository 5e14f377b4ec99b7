//! Builds what a server is made of before any thread starts: each parser thread's poll and
//! request-path state, the executor, the hand-off between them, statistics. `Server::start`
//! and the benchmark internals both start from here, so neither can drift from the other.

use std::sync::Arc;

use mio::{Poll, Waker};

use crate::config::Limits;
use crate::dispatch::Worker;
use crate::executor::Executor;
use crate::job::{self, Controller, Exchange, JobSender, Mailbox};
use crate::parked::ReplicatedLane;
use crate::parser::WAKER;
use crate::registry::{Registry, ShutdownHook};
use crate::replication::Opened;
use crate::stats::Stats;

/// One parser thread's parts: its poll (whose waker the executor holds) and its worker.
pub(crate) struct ParserParts<S, V> {
    pub(crate) poll: Poll,
    pub(crate) worker: Worker<S, V>,
}

/// A server's parts, not yet running.
pub(crate) struct Wiring<S, V> {
    pub(crate) parsers: Vec<ParserParts<S, V>>,
    pub(crate) executor: Executor<S, V>,
    /// Sends control jobs (shutdown, events, exit notices) through the job queue.
    pub(crate) controller: Controller<S, V>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) shared: Arc<V>,
    pub(crate) on_shutdown: Option<ShutdownHook<V>>,
}

impl<S: Send + 'static, V: Send + Sync + 'static> Wiring<S, V> {
    /// Wires `threads` parser threads to one executor owning the registry's state; with
    /// `log` (durable and cluster modes), replicated calls go through the replicated log.
    pub(crate) fn new(
        registry: Registry<S, V>,
        threads: usize,
        limits: Limits,
        package: String,
        log: Option<&Opened>,
    ) -> std::io::Result<Self> {
        let status = log.map(|opened| opened.status.clone());
        let info = Arc::new(registry.server_info(package, status));
        let names = registry.metric_names();
        let routes = registry.routes();
        let stats = Arc::new(Stats::with_commands(
            threads,
            registry.metric_names(),
            limits.memory_limit_bytes,
        ));
        let Registry { state, shared, commands, on_shutdown, snapshots, .. } = registry;
        let commands = Arc::new(commands);
        let log = log.map(|opened| {
            let snapshots = snapshots.expect("Server::start refuses a log without a snapshot form");
            ReplicatedLane::new(opened, names, routes, Arc::clone(&commands), snapshots)
        });
        let mut polls = Vec::with_capacity(threads);
        let mut mailboxes = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            mailboxes.push(Mailbox::new(waker, limits.queue_capacity));
            polls.push(poll);
        }
        let exchange = Arc::new(Exchange::new(mailboxes, limits.queue_capacity));
        let (tx, rx) = job::batch_queue(limits.queue_capacity);
        let parsers: Vec<ParserParts<S, V>> = polls
            .into_iter()
            .enumerate()
            .map(|(thread, poll)| {
                let jobs = JobSender::new(thread, tx.clone(), Arc::clone(&exchange));
                let worker = Worker::new(
                    Arc::clone(&commands),
                    Arc::clone(&shared),
                    Arc::clone(&stats),
                    Arc::clone(&info),
                    jobs,
                    limits,
                );
                ParserParts { poll, worker }
            })
            .collect();
        let controller = JobSender::new(0, tx, Arc::clone(&exchange)).controller();
        let executor =
            Executor::new(state, Arc::clone(&shared), rx, exchange, Arc::clone(&stats), info)
                .with_shutdown_hook(on_shutdown.clone())
                .with_log(log);
        Ok(Wiring { parsers, executor, controller, stats, shared, on_shutdown })
    }
}
