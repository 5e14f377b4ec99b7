//! The Prometheus endpoint (`--metrics tcp:HOST:PORT`, [`Config::metrics`]): serves the
//! OpenMetrics text format on `GET /metrics` over HTTP, from a thread of its own.
//!
//! Nothing is counted here. A `prometheus-client` [`Collector`] reads the counters that
//! `stats.rs` already keeps (per parser thread, single writer, no lock) at scrape time, so
//! metrics cost the request path nothing beyond those counters' bumps; only the in-band
//! latency histograms are read under the executor's publication mutex, which the executor
//! takes every [`PUBLISH_EVERY`](crate::stats::PUBLISH_EVERY), never per job. HTTP is
//! `tiny_http` on one thread: a scrape every few seconds needs no more, and keeping it off
//! the parser threads' mio loops keeps HTTP parsing out of the latency-critical path.
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
//!
//! [`Config::metrics`]: crate::Config::metrics

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::budget::Pause;
use crate::stats::{DIALECTS, ERROR_CLASSES, LANES, LATENCY_BUCKETS, Stats};
use crate::{Address, Error};

/// The OpenMetrics text format's content type, as Prometheus negotiates it.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The running HTTP endpoint; dropping it stops the thread and waits for it.
pub(crate) struct MetricsEndpoint {
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
    /// Binds `address` (TCP only; port 0 picks one) and starts serving `stats`.
    pub(crate) fn start(address: &Address, stats: Arc<Stats>) -> Result<MetricsEndpoint, Error> {
        let fail = |source| Error::Bind { address: address.clone(), source };
        let Address::Tcp(addr) = address else {
            return Err(fail(io::Error::new(io::ErrorKind::Unsupported, "metrics need tcp:")));
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
    pub(crate) fn addr(&self) -> SocketAddr {
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
        let stats = &*self.0;
        self.requests(&mut encoder)?;
        let dispatched = encoder.encode_descriptor(
            "engine_dispatched",
            "Requests handed to a lane: in-band jobs queued for the executor, OOB requests run on a parser thread (JSON-RPC echo included).",
            None,
            MetricType::Counter,
        )?;
        let mut dispatched = dispatched;
        for (lane, value) in [("inband", stats.sum(|t| &t.inband)), ("oob", stats.sum(|t| &t.oob))]
        {
            ConstCounter::new(value).encode(dispatched.encode_family(&[("lane", lane)])?)?;
        }
        let mut errors = encoder.encode_descriptor(
            "engine_errors",
            "Error replies by QMP error class, from any stage (bad input, routing, arguments, handlers).",
            None,
            MetricType::Counter,
        )?;
        for (i, class) in ERROR_CLASSES.iter().enumerate() {
            let value = stats.sum(|t| &t.error_classes[i]);
            ConstCounter::new(value).encode(errors.encode_family(&[("class", class.as_str())])?)?;
        }
        counter(
            &mut encoder,
            "engine_bad_input",
            "Unparsable or over-limit messages.",
            stats.sum(|t| &t.bad_input),
        )?;
        counter(
            &mut encoder,
            "engine_parked_requests",
            "In-band requests parked in their connection (in-flight limit or full queue).",
            stats.sum(|t| &t.parked),
        )?;
        let mut paused = encoder.encode_descriptor(
            "engine_paused_connections",
            "Connections not being read now, by reason: own (over their byte budget, --conn-budget), shared (the server is over --memory-limit and they hold more than their share).",
            None,
            MetricType::Gauge,
        )?;
        for (i, reason) in Pause::NAMES.iter().enumerate() {
            let value = stats.sum(|t| &t.paused[i]) as f64;
            ConstGauge::new(value).encode(paused.encode_family(&[("reason", *reason)])?)?;
        }
        gauge(
            &mut encoder,
            "engine_memory_held_bytes",
            "Bytes held for all connections, as their byte budgets count them (requests read, replies owed, buffers).",
            stats.memory.held() as f64,
        )?;
        gauge(
            &mut encoder,
            "engine_memory_peak_bytes",
            "The most bytes held for all connections at once since start.",
            stats.memory.peak() as f64,
        )?;
        gauge(
            &mut encoder,
            "engine_memory_limit_bytes",
            "The server's memory limit (--memory-limit).",
            stats.memory.limit() as f64,
        )?;
        gauge(
            &mut encoder,
            "engine_queue_depth",
            "Jobs waiting in the executor queue, as last seen by the executor.",
            stats.queue_depth.load(Ordering::Relaxed) as f64,
        )?;
        let snapshot = stats.snapshot();
        counter(
            &mut encoder,
            "engine_connections_accepted",
            "Connections accepted.",
            snapshot.connections.accepted,
        )?;
        gauge(
            &mut encoder,
            "engine_connections_open",
            "Connections open.",
            snapshot.connections.open as f64,
        )?;
        gauge(&mut encoder, "engine_parser_threads", "Parser threads.", snapshot.threads as f64)?;
        gauge(
            &mut encoder,
            "engine_uptime_seconds",
            "Seconds since the server started.",
            snapshot.uptime_ms as f64 / 1e3,
        )?;
        gauge(
            &mut encoder,
            "engine_executor_current_job_seconds",
            "How long the executor has been running its current job; 0 when idle.",
            snapshot.executor.busy_for_us.unwrap_or(0.0) / 1e6,
        )?;
        self.executor(&mut encoder)
    }
}

impl StatsCollector {
    /// `engine_requests_total{dialect, lane, command}`, every combination (zeros included,
    /// so a rate query works from the first scrape).
    fn requests(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &*self.0;
        let mut family = encoder.encode_descriptor(
            "engine_requests",
            "Requests routed to a registered command, by dialect, the lane asked for, and command.",
            None,
            MetricType::Counter,
        )?;
        let commands = stats.commands.len();
        for (d, dialect) in DIALECTS.iter().enumerate() {
            for (l, lane) in LANES.iter().enumerate() {
                for (c, command) in stats.commands.iter().enumerate() {
                    let index = (d * LANES.len() + l) * commands + c;
                    let value = stats.sum(|t| &t.routed[index]);
                    let labels =
                        [("dialect", *dialect), ("lane", *lane), ("command", command.as_str())];
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }

    /// Executor totals and the latency histograms of both lanes.
    fn executor(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &*self.0;
        let (jobs, busy, wait, service) = {
            let executor = stats.executor.lock();
            let wait = buckets_of(&executor.wait, executor.wait_sum_ns);
            let service = buckets_of(&executor.service, executor.service_sum_ns);
            (executor.jobs, executor.service_sum_ns, wait, service)
        };
        counter(
            encoder,
            "engine_executor_jobs",
            "Jobs the executor ran (as of its last publication).",
            jobs,
        )?;
        let busy_help = "Seconds the executor spent running handlers (as of its last publication).";
        let busy = ConstCounter::new(busy as f64 / 1e9);
        busy.encode(encoder.encode_descriptor(
            "engine_executor_busy_seconds",
            busy_help,
            None,
            busy.metric_type(),
        )?)?;
        let oob = self.oob_buckets();
        let mut family = encoder.encode_descriptor(
            "engine_request_duration_seconds",
            "Latency by lane and stage: inband wait (queued until the executor starts it), inband service (handler), oob service (argument decoding, handler and reply encoding, on the parser thread).",
            None,
            MetricType::Histogram,
        )?;
        for (lane, stage, h) in
            [("inband", "wait", &wait), ("inband", "service", &service), ("oob", "service", &oob)]
        {
            let labels = [("lane", lane), ("stage", stage)];
            let mut metric = family.encode_family(&labels)?;
            metric.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }

    /// The parser threads' OOB buckets, summed.
    fn oob_buckets(&self) -> Buckets {
        let stats = &*self.0;
        let mut buckets: Vec<(f64, u64)> =
            LATENCY_BUCKETS.iter().chain([&f64::INFINITY]).map(|&b| (b, 0)).collect();
        let mut sum_ns = 0u64;
        for thread in stats.threads.iter() {
            for (bucket, count) in buckets.iter_mut().zip(&thread.oob_latency.counts) {
                bucket.1 += count.load(Ordering::Relaxed);
            }
            sum_ns = sum_ns.saturating_add(thread.oob_latency.sum_ns.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        Buckets { buckets, count, sum: sum_ns as f64 / 1e9 }
    }
}

/// A histogram in `prometheus-client`'s form: per-bucket (not cumulative) counts.
struct Buckets {
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
}

/// An HdrHistogram of nanoseconds in [`LATENCY_BUCKETS`], with the exact sum kept beside it.
fn buckets_of(histogram: &Histogram<u64>, sum_ns: u64) -> Buckets {
    let mut below = 0;
    let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
    for bound in LATENCY_BUCKETS {
        let upto = histogram.count_between(0, (bound * 1e9) as u64);
        buckets.push((bound, upto - below));
        below = upto;
    }
    buckets.push((f64::INFINITY, histogram.len() - below));
    Buckets { buckets, count: histogram.len(), sum: sum_ns as f64 / 1e9 }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdr_histograms_map_onto_per_bucket_counts() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for ns in [500, 900, 2_000, 40_000, 20_000_000_000] {
            h.record(ns).unwrap();
        }
        let b = buckets_of(&h, 20_000_043_400);
        assert_eq!(b.count, 5);
        assert_eq!(b.buckets[0], (1e-6, 2), "0.5 µs and 0.9 µs");
        assert_eq!(b.buckets[1], (2.5e-6, 1), "2 µs");
        assert_eq!(b.buckets[5], (5e-5, 1), "40 µs");
        assert_eq!(b.buckets.last(), Some(&(f64::INFINITY, 1)), "20 s");
        assert_eq!(b.buckets.iter().map(|b| b.1).sum::<u64>(), 5);
        assert!((b.sum - 20.0000434).abs() < 1e-9);
    }
}
