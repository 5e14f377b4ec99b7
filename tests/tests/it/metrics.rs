//! The Prometheus endpoint over real sockets: after a known mix of QMP and JSON-RPC requests
//! (in-band, OOB, unknown commands, bad arguments, a failing handler), one scrape returns
//! exactly those counts, in the OpenMetrics text format; connections paused behind a `stall`
//! show in the memory gauges, by reason, and the bytes held return to zero once they close.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ooblane_server::metrics::MetricsEndpoint;
use serde_json::json;
use tests::{Client, READ_TIMEOUT, start_server_with, start_server_with_metrics, test_config};

/// One HTTP/1.1 GET; returns the status line, the headers (lower-cased names) and the body.
fn http_get(addr: SocketAddr, path: &str) -> (String, HashMap<String, String>, String) {
    let mut stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a whole response");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.lines();
    let status = lines.next().unwrap().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// `name{labels}` to value, for every sample line.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("a sample");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// Scrapes until the executor has published `jobs` jobs (it publishes every 50 ms).
fn scrape_after_jobs(addr: SocketAddr, jobs: f64) -> HashMap<String, f64> {
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let (_, _, body) = http_get(addr, "/metrics");
        let samples = samples(&body);
        if samples["engine_executor_jobs_total"] >= jobs {
            return samples;
        }
        assert!(Instant::now() < deadline, "the executor never published {jobs} jobs: {body}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_scrape_returns_the_exact_counts_of_what_was_sent() {
    let mut config = test_config();
    config.jsonrpc = vec!["tcp:127.0.0.1:0".parse().unwrap()];
    let server = start_server_with_metrics(config);
    let metrics = server.metrics_addr();
    let mut qmp = Client::negotiated(&server.addr);
    let mut rpc = Client::jsonrpc(&server.handle().jsonrpc_addrs()[0]);

    for i in 1..=5 {
        let reply = qmp.request(r#"{"execute":"counter-add","arguments":{"delta":1}}"#);
        assert_eq!(reply, json!({"return": {"value": i}}));
    }
    for _ in 0..3 {
        assert_eq!(qmp.request(r#"{"exec-oob":"ping"}"#), json!({"return": {}}));
    }
    for _ in 0..2 {
        assert_eq!(qmp.request(r#"{"execute":"nope"}"#)["error"]["class"], "CommandNotFound");
    }
    assert_eq!(qmp.request(r#"{"execute":"work"}"#)["error"]["class"], "GenericError");
    for i in 6..=9 {
        let reply = rpc.request(r#"{"id":1,"method":"counter-add","params":[{"delta":1}]}"#);
        assert_eq!(reply["result"], json!({"value": i}));
    }
    for _ in 0..2 {
        assert_eq!(rpc.request(r#"{"id":2,"method":"ping","params":[]}"#)["result"], json!({}));
    }
    // Fails in the handler, on the executor: counted with the in-band outcome.
    let overflow =
        qmp.request(r#"{"execute":"counter-add","arguments":{"delta":9223372036854775807}}"#);
    assert_eq!(overflow["error"]["desc"], "counter overflow");

    let s = scrape_after_jobs(metrics, 10.0);
    let expect = [
        (r#"engine_requests_total{dialect="qmp",lane="inband",command="counter-add"}"#, 6.0),
        (r#"engine_requests_total{dialect="qmp",lane="oob",command="ping"}"#, 3.0),
        (r#"engine_requests_total{dialect="qmp",lane="inband",command="work"}"#, 1.0),
        (r#"engine_requests_total{dialect="jsonrpc",lane="inband",command="counter-add"}"#, 4.0),
        (r#"engine_requests_total{dialect="jsonrpc",lane="oob",command="ping"}"#, 2.0),
        (r#"engine_requests_total{dialect="qmp",lane="inband",command="ping"}"#, 0.0),
        (r#"engine_dispatched_total{lane="inband"}"#, 10.0),
        (r#"engine_dispatched_total{lane="oob"}"#, 5.0),
        (r#"engine_errors_total{class="CommandNotFound"}"#, 2.0),
        (r#"engine_errors_total{class="GenericError"}"#, 2.0),
        ("engine_bad_input_total", 0.0),
        ("engine_parked_requests_total", 0.0),
        (r#"engine_paused_connections{reason="own"}"#, 0.0),
        (r#"engine_paused_connections{reason="shared"}"#, 0.0),
        ("engine_queue_depth", 0.0),
        ("engine_executor_jobs_total", 10.0),
        ("engine_connections_accepted_total", 2.0),
        ("engine_connections_open", 2.0),
        ("engine_parser_threads", 2.0),
        (r#"engine_request_duration_seconds_count{lane="inband",stage="service"}"#, 10.0),
        (r#"engine_request_duration_seconds_count{lane="inband",stage="wait"}"#, 10.0),
        (r#"engine_request_duration_seconds_count{lane="oob",stage="service"}"#, 5.0),
        (r#"engine_request_duration_seconds_bucket{le="+Inf",lane="oob",stage="service"}"#, 5.0),
    ];
    for (name, value) in expect {
        assert_eq!(s.get(name), Some(&value), "{name}");
    }
    let sum = r#"engine_request_duration_seconds_sum{lane="inband",stage="service"}"#;
    assert!(s[sum] > 0.0 && s[sum] < 10.0, "{sum} = {}", s[sum]);
    assert!(s["engine_executor_busy_seconds_total"] > 0.0);
    // The scrapes themselves are not requests.
    let (_, _, body) = http_get(metrics, "/metrics");
    assert_eq!(samples(&body)[r#"engine_dispatched_total{lane="oob"}"#], 5.0);
}

#[test]
fn the_endpoint_speaks_openmetrics_and_answers_404_elsewhere() {
    let server = start_server_with_metrics(test_config());
    let metrics = server.metrics_addr();
    let (status, headers, body) = http_get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(body.contains("# TYPE engine_requests counter\n"), "{body}");
    assert!(body.contains("# TYPE engine_request_duration_seconds histogram\n"), "{body}");
    let (status, _, _) = http_get(metrics, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[test]
fn metrics_need_a_tcp_address() {
    let server = start_server_with(test_config());
    let unix = "unix:/tmp/engine-metrics-never.sock".parse().unwrap();
    let err = MetricsEndpoint::start(&unix, server.handle().stats_source()).unwrap_err();
    assert_eq!(err.to_string(), "invalid configuration: the metrics endpoint needs a tcp: address");
}

/// Scrapes until `ready` holds for the samples (bounded by [`READ_TIMEOUT`]).
fn scrape_until(
    addr: SocketAddr,
    what: &str,
    ready: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let (_, _, body) = http_get(addr, "/metrics");
        let samples = samples(&body);
        if ready(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "never {what}: {body}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const OWN: &str = r#"engine_paused_connections{reason="own"}"#;
const SHARED: &str = r#"engine_paused_connections{reason="shared"}"#;
const HELD: &str = "engine_memory_held_bytes";

/// Behind a `stall`, `pipeliners` connections each send `requests` `counter-add` without
/// reading until the engine stops reading them; `check` sees the scrape once `paused` of them
/// are paused for `reason`, and the probe's `query-stats` memory. Then the stall is
/// released, every reply read, every client closed: nothing is held any more.
fn pause_behind_a_stall(
    config: ooblane::Config,
    pipeliners: usize,
    requests: usize,
    reason: &str,
    check: impl Fn(&HashMap<String, f64>, &serde_json::Value),
) {
    let server = start_server_with_metrics(config);
    let metrics = server.metrics_addr();
    let mut staller = Client::negotiated(&server.addr);
    let mut probe = Client::negotiated(&server.addr);
    staller.send(r#"{"execute":"stall","id":"s"}"#);
    tests::wait_until_executor_busy(&mut probe);
    let mut clients: Vec<Client> =
        (0..pipeliners).map(|_| Client::negotiated(&server.addr)).collect();
    let senders: Vec<_> = clients
        .iter()
        .map(|client| {
            let mut writer = client.clone_writer();
            std::thread::spawn(move || {
                let add = r#"{"execute":"counter-add","arguments":{"delta":1}}"#;
                writer.send(&add.repeat(requests));
            })
        })
        .collect();
    let paused = scrape_until(metrics, "paused", |s| s[reason] == pipeliners as f64);
    let memory = probe.request(r#"{"exec-oob":"query-stats"}"#)["return"]["memory"].clone();
    check(&paused, &memory);
    assert_eq!(probe.request(r#"{"exec-oob":"release"}"#), json!({"return":{"released":1}}));
    assert_eq!(staller.recv(), json!({"return":{"released":true},"id":"s"}));
    for client in &mut clients {
        for _ in 0..requests {
            assert!(client.recv()["return"]["value"].is_i64());
        }
    }
    for sender in senders {
        sender.join().unwrap();
    }
    drop(clients);
    drop(staller);
    drop(probe);
    let after = scrape_until(metrics, "all closed", |s| s["engine_connections_open"] == 0.0);
    assert_eq!(after[HELD], 0.0, "every byte counted is given back");
    assert_eq!((after[OWN], after[SHARED]), (0.0, 0.0));
    assert!(after["engine_memory_peak_bytes"] >= paused[HELD]);
}

#[test]
fn a_connection_over_its_budget_shows_as_paused_for_its_own_reason() {
    const BUDGET: usize = 64 * 1024;
    let mut config = test_config();
    config.limits.max_message_bytes = 16 * 1024;
    config.limits.conn_budget_bytes = BUDGET;
    config.limits.memory_limit_bytes = 64 << 20;
    // 3,000 requests of 50 bytes, 160 more each once parked: ten budgets.
    pause_behind_a_stall(config, 1, 3_000, OWN, |s, memory| {
        assert_eq!(s[SHARED], 0.0);
        assert_eq!(s["engine_memory_limit_bytes"], (64 << 20) as f64);
        assert_eq!(
            (memory["paused-own"].as_u64(), memory["paused-shared"].as_u64()),
            (Some(1), Some(0))
        );
        assert_eq!(memory["limit"].as_u64(), Some(64 << 20));
        // The pipeliner holds just past its budget (the read that crossed it, at most one
        // read buffer); the staller and the probe hold their buffers and one reply reserve.
        let held = s[HELD] as usize;
        assert!(held > BUDGET && held < 2 * BUDGET + 2 * 32 * 1024 + 4096, "held {held}");
    });
}

#[test]
fn connections_over_their_share_of_the_memory_limit_show_as_paused_for_it() {
    const LIMIT: usize = 256 * 1024;
    let mut config = test_config();
    config.limits.memory_limit_bytes = LIMIT;
    // Three connections of 3,000 requests of 50 bytes, 160 more each once parked: seven
    // limits, each far from its own 4 MiB budget.
    pause_behind_a_stall(config, 3, 3_000, SHARED, |s, memory| {
        assert_eq!(s[OWN], 0.0);
        assert_eq!(s["engine_memory_limit_bytes"], LIMIT as f64);
        assert_eq!(
            (memory["paused-own"].as_u64(), memory["paused-shared"].as_u64()),
            (Some(0), Some(3))
        );
        // Past the limit and its 1/16 slack by at most one read buffer per parser thread.
        let held = s[HELD] as usize;
        assert!(held > LIMIT && held <= LIMIT + LIMIT / 16 + 2 * (16 * 1024 + 64), "held {held}");
    });
}
