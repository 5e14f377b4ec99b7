//! The Prometheus endpoint (`--metrics tcp:HOST:PORT`): serves the OpenMetrics text format
//! on `GET /metrics` over HTTP, from a thread of its own (`engine-metrics`).
//!
//! Nothing is counted here. A `prometheus-client` [`Collector`] reads the server's counters
//! ([`Stats::scrape`]: per parser thread, single writer, no lock) at scrape time, so metrics
//! cost the request path nothing beyond those counters' bumps. HTTP is `tiny_http` on one
//! thread: a scrape every few seconds needs no more, and keeping it off the parser threads'
//! mio loops keeps HTTP parsing out of the latency-critical path.
//!
//! Exported (names as Prometheus sees them):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `engine_requests_total` | counter | `dialect`, `lane` (asked for), `command` |
//! | `engine_dispatched_total` | counter | `lane`: in-band jobs queued, OOB requests run |
//! | `engine_errors_total` | counter | `class` |
//! | `engine_bad_input_total` | counter | |
//! | `engine_parked_requests_total` | counter | |
//! | `engine_paused_connections` | gauge | `reason` (`own`: over its budget, `shared`: over its share of the limit) |
//! | `engine_memory_held_bytes`, `engine_memory_peak_bytes`, `engine_memory_limit_bytes` | gauge | |
//! | `engine_queue_depth` | gauge | |
//! | `engine_executor_jobs_total` | counter | |
//! | `engine_executor_busy_seconds_total` | counter | |
//! | `engine_executor_current_job_seconds` | gauge | |
//! | `engine_connections_accepted_total` | counter | |
//! | `engine_connections_open` | gauge | |
//! | `engine_request_duration_seconds` | histogram | `lane`, `stage` (`wait`, `service`) |
//! | `engine_parser_threads`, `engine_uptime_seconds` | gauge | |

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use ooblane::{Address, Buckets, Error, Scrape, Stats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The OpenMetrics text format's content type, as Prometheus negotiates it.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The running HTTP endpoint; dropping it stops the thread and waits for it.
pub struct MetricsEndpoint {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl MetricsEndpoint {
    /// Binds `address` (TCP only; port 0 picks one) and starts serving `stats`
    /// ([`ServerHandle::stats_source`](ooblane::ServerHandle::stats_source)).
    pub fn start(address: &Address, stats: Arc<Stats>) -> Result<MetricsEndpoint, Error> {
        let fail = |source| Error::Bind { address: address.clone(), source };
        let Address::Tcp(addr) = address else {
            return Err(Error::Config("the metrics endpoint needs a tcp: address".into()));
        };
        let server = tiny_http::Server::http(addr).map_err(|e| fail(io::Error::other(e)))?;
        let addr = server.server_addr().to_ip().ok_or_else(|| fail(io::Error::other("no ip")))?;
        let server = Arc::new(server);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(StatsCollector(stats)));
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("engine-metrics".into())
            .spawn(move || serve(&serving, &registry))
            .map_err(Error::Start)?;
        tracing::info!(%addr, "serving metrics");
        Ok(MetricsEndpoint { server, addr, thread: Some(thread) })
    }

    /// The bound address, with the actual port where port 0 was asked.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers requests until the endpoint is dropped.
fn serve(server: &tiny_http::Server, registry: &Registry) {
    for request in server.incoming_requests() {
        let response = match (request.method(), request.url()) {
            (tiny_http::Method::Get, "/metrics") => scrape(registry),
            _ => tiny_http::Response::from_string("not found: try GET /metrics\n")
                .with_status_code(404),
        };
        if let Err(e) = request.respond(response) {
            tracing::debug!(error = %e, "metrics client went away");
        }
    }
}

fn scrape(registry: &Registry) -> tiny_http::Response<io::Cursor<Vec<u8>>> {
    let mut body = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
        return tiny_http::Response::from_string("cannot encode metrics\n").with_status_code(500);
    }
    let header =
        tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE).expect("a valid header");
    tiny_http::Response::from_string(body).with_header(header)
}

/// Reads [`Stats`] at scrape time.
#[derive(Debug)]
struct StatsCollector(Arc<Stats>);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let scrape = self.0.scrape();
        requests(&mut encoder, &scrape)?;
        let mut dispatched = encoder.encode_descriptor(
            "engine_dispatched",
            "Requests handed to a lane: in-band jobs queued for the executor, OOB requests run on a parser thread (JSON-RPC echo included).",
            None,
            MetricType::Counter,
        )?;
        for (lane, value) in [("inband", scrape.dispatched_inband), ("oob", scrape.dispatched_oob)]
        {
            ConstCounter::new(value).encode(dispatched.encode_family(&[("lane", lane)])?)?;
        }
        let mut errors = encoder.encode_descriptor(
            "engine_errors",
            "Error replies by QMP error class, from any stage (bad input, routing, arguments, handlers).",
            None,
            MetricType::Counter,
        )?;
        for (class, value) in &scrape.errors {
            ConstCounter::new(*value).encode(errors.encode_family(&[("class", *class)])?)?;
        }
        counter(
            &mut encoder,
            "engine_bad_input",
            "Unparsable or over-limit messages.",
            scrape.bad_input,
        )?;
        counter(
            &mut encoder,
            "engine_parked_requests",
            "In-band requests parked in their connection (in-flight limit or full queue).",
            scrape.parked,
        )?;
        let mut paused = encoder.encode_descriptor(
            "engine_paused_connections",
            "Connections not being read now, by reason: own (over their byte budget, --conn-budget), shared (the server is over --memory-limit and they hold more than their share).",
            None,
            MetricType::Gauge,
        )?;
        for (reason, value) in &scrape.paused {
            ConstGauge::new(*value as f64).encode(paused.encode_family(&[("reason", *reason)])?)?;
        }
        gauges(&mut encoder, &scrape)?;
        executor(&mut encoder, &scrape)
    }
}

/// `engine_requests_total{dialect, lane, command}`, every combination (zeros included, so a
/// rate query works from the first scrape).
fn requests(encoder: &mut DescriptorEncoder, scrape: &Scrape) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "engine_requests",
        "Requests routed to a registered command, by dialect, the lane asked for, and command.",
        None,
        MetricType::Counter,
    )?;
    for routed in &scrape.routed {
        let labels = [
            ("dialect", routed.dialect),
            ("lane", routed.lane),
            ("command", routed.command.as_str()),
        ];
        ConstCounter::new(routed.count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Memory, queue, connections, threads, uptime, the executor's current job.
fn gauges(encoder: &mut DescriptorEncoder, scrape: &Scrape) -> Result<(), std::fmt::Error> {
    let snapshot = &scrape.snapshot;
    gauge(
        encoder,
        "engine_memory_held_bytes",
        "Bytes held for all connections, as their byte budgets count them (requests read, replies owed, buffers).",
        snapshot.memory.held as f64,
    )?;
    gauge(
        encoder,
        "engine_memory_peak_bytes",
        "The most bytes held for all connections at once since start.",
        snapshot.memory.peak as f64,
    )?;
    gauge(
        encoder,
        "engine_memory_limit_bytes",
        "The server's memory limit (--memory-limit).",
        snapshot.memory.limit as f64,
    )?;
    gauge(
        encoder,
        "engine_queue_depth",
        "Jobs waiting in the executor queue, as last seen by the executor.",
        scrape.queue_depth as f64,
    )?;
    counter(
        encoder,
        "engine_connections_accepted",
        "Connections accepted.",
        snapshot.connections.accepted,
    )?;
    gauge(
        encoder,
        "engine_connections_open",
        "Connections open.",
        snapshot.connections.open as f64,
    )?;
    gauge(encoder, "engine_parser_threads", "Parser threads.", snapshot.threads as f64)?;
    gauge(
        encoder,
        "engine_uptime_seconds",
        "Seconds since the server started.",
        snapshot.uptime_ms as f64 / 1e3,
    )?;
    gauge(
        encoder,
        "engine_executor_current_job_seconds",
        "How long the executor has been running its current job; 0 when idle.",
        snapshot.executor.busy_for_us.unwrap_or(0.0) / 1e6,
    )
}

/// Executor totals and the latency histograms of both lanes.
fn executor(encoder: &mut DescriptorEncoder, scrape: &Scrape) -> Result<(), std::fmt::Error> {
    counter(
        encoder,
        "engine_executor_jobs",
        "Jobs the executor ran (as of its last publication).",
        scrape.executor_jobs,
    )?;
    let busy_help = "Seconds the executor spent running handlers (as of its last publication).";
    let busy = ConstCounter::new(scrape.executor_busy_seconds);
    busy.encode(encoder.encode_descriptor(
        "engine_executor_busy_seconds",
        busy_help,
        None,
        busy.metric_type(),
    )?)?;
    let mut family = encoder.encode_descriptor(
        "engine_request_duration_seconds",
        "Latency by lane and stage: inband wait (queued until the executor starts it), inband service (handler), oob service (argument decoding, handler and reply encoding, on the parser thread).",
        None,
        MetricType::Histogram,
    )?;
    let histograms: [(&str, &str, &Buckets); 3] = [
        ("inband", "wait", &scrape.inband_wait),
        ("inband", "service", &scrape.inband_service),
        ("oob", "service", &scrape.oob_service),
    ];
    for (lane, stage, h) in histograms {
        let labels = [("lane", lane), ("stage", stage)];
        let mut metric = family.encode_family(&labels)?;
        metric.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}
