//! loadgen against real sockets: in-process engines (exact counts, failover) and fake QMP
//! servers that misbehave on purpose (reordered, duplicated, unknown replies).
//!
//! Runs are short (about a second) at small rates with exact schedules, so counts are
//! asserted exactly. Every run is bounded by its duration plus the drain timeout; fake
//! servers have read timeouts; nothing is written under the repository.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use loadgen::{Address, Backoff, Lane, Mode, RunConfig};
use serde_json::{Value, json};
use tests::{READ_TIMEOUT, start_server};

/// A short open-loop run: no warm-up, 1 s measured, every reply must arrive within 2 s.
fn short_config(remotes: Vec<Address>, lanes: Vec<Lane>) -> RunConfig {
    RunConfig {
        remotes,
        lanes,
        connections: 2,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(2),
        seed: Some(7),
        label: "it".into(),
        ..RunConfig::default()
    }
}

/// 100/s in-band `work` + 100/s OOB `ping`: with 2 connections each (connection, lane)
/// schedule has a period of exactly 20 ms, so 1 s holds exactly 50 + 50 per connection.
fn exact_lanes() -> Vec<Lane> {
    vec![
        Lane::new("work", "work", Some(json!({"us": 10})), false).with_rate(100.0),
        Lane::new("ping", "ping", None, true).with_rate(100.0),
    ]
}

#[test]
fn exact_counts_against_the_engine_and_files_written() {
    let server = start_server();
    let run = loadgen::run(&short_config(vec![server.addr.clone()], exact_lanes())).expect("run");
    let s = &run.summary;
    assert!(s.passed(), "{}", run.table());
    for lane in &s.lanes {
        assert_eq!(
            (lane.counts.sent, lane.counts.ok, lane.corrected.count),
            (100, 100, 100),
            "{}",
            lane.name
        );
        assert_eq!(lane.counts.bad(), 0);
        assert!(lane.corrected.p50 >= lane.service.p50 * 0.5 && lane.corrected.max > 0.0);
    }
    assert_eq!(s.total.counts.sent, 200);
    assert_eq!(s.verification.violations(), 0);
    assert_eq!(s.remotes[0].counts.sessions, 2);

    let dir = std::env::temp_dir().join(format!("loadgen-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    run.write_to(&dir).expect("write results");
    for file in [
        "report.txt",
        "summary.json",
        "work.hgrm",
        "ping.service.hgrm",
        "intervals.hlog",
        "intervals.csv",
        "percentiles.svg",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let saved: Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(saved["total"]["counts"]["ok"], 200);
    assert!(run.write_to(&dir).is_err(), "results are never overwritten");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn error_replies_are_reported_with_what_they_said() {
    let server = start_server();
    let lanes = vec![
        Lane::new("work", "work", Some(json!({"us": 10})), false).with_rate(100.0),
        Lane::new("typo", "no-such-command", None, false).with_rate(50.0),
        Lane::new("oob-work", "work", Some(json!({"us": 10})), true).with_rate(50.0),
    ];
    let run = loadgen::run(&short_config(vec![server.addr.clone()], lanes)).expect("run");
    let s = &run.summary;
    assert_eq!(s.failures, vec!["100 error replies"], "{}", run.table());
    let said: Vec<(&str, &str, u64)> =
        s.error_texts.kept.iter().map(|e| (e.lane.as_str(), e.text.as_str(), e.count)).collect();
    assert_eq!(
        said,
        vec![
            ("oob-work", "GenericError: The command work does not support OOB", 50),
            ("typo", "CommandNotFound: The command no-such-command has not been found", 50),
        ],
        "{}",
        run.table()
    );
    assert_eq!(s.error_texts.others, 0);
    let listed =
        "error replies by lane and text:\n  oob-work          50  GenericError: The command work";
    assert!(run.table().contains(listed), "{}", run.table());
}

#[test]
fn closed_loop_keeps_depth_and_verifies() {
    let server = start_server();
    let cfg = RunConfig {
        mode: Mode::Closed { depth: 4 },
        duration: Duration::from_millis(500),
        ..short_config(vec![server.addr.clone()], exact_lanes())
    };
    let run = loadgen::run(&cfg).expect("run");
    let t = &run.summary.total.counts;
    assert!(run.summary.passed(), "{}", run.table());
    assert!(t.ok > 100, "closed loop should go fast: {}", t.ok);
    assert_eq!(t.sent, t.ok);
}

#[test]
fn failover_when_one_of_two_engines_shuts_down() {
    let a = start_server();
    let b = start_server();
    let cfg = RunConfig {
        connections: 2,
        duration: Duration::from_millis(1500),
        shuffle_remotes: false,
        backoff: Backoff { min: Duration::from_millis(100), max: Duration::from_millis(400) },
        expect_errors: true,
        ..short_config(vec![a.addr.clone(), b.addr.clone()], exact_lanes())
    };
    let killer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        a.shutdown();
    });
    let run = loadgen::run(&cfg).expect("run");
    killer.join().unwrap();
    let s = &run.summary;
    let (ra, rb) = (&s.remotes[0].counts, &s.remotes[1].counts);
    assert_eq!((ra.sessions, ra.disconnects), (2, 2), "{}", run.table());
    assert_eq!((rb.sessions, rb.reconnects, rb.disconnects), (2, 2, 0), "{}", run.table());
    let t = &s.total.counts;
    assert_eq!(t.sent + t.unsent, 300, "every scheduled request is accounted for");
    assert_eq!(t.sent, t.ok + t.errors + t.failed + t.missing, "{}", run.table());
    assert_eq!(t.failed, ra.failed_requests + rb.failed_requests);
    assert_eq!((t.missing, t.unsent), (0, 0), "{}", run.table());
    assert_eq!(s.verification.violations(), 0, "{}", run.table());
    assert!(s.passed(), "expected errors do not fail the run");
    assert!(run.table().contains("2 reconnects"), "{}", run.table());
}

#[test]
fn unreachable_remotes_are_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead: Address = format!("tcp:127.0.0.1:{port}").parse().unwrap();
    let err = loadgen::run(&short_config(vec![dead], exact_lanes())).unwrap_err().to_string();
    assert!(err.contains("no remote is reachable") && err.contains(&port.to_string()), "{err}");
}

/// How the fake server answers a batch of in-band request ids.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Answers requests in pairs, second first.
    SwapPairs,
    /// Answers every request twice.
    Duplicate,
    /// Answers every fifth request with an id it never received.
    WrongIds,
}

/// A QMP server on 127.0.0.1 that serves one connection and misbehaves as told.
fn fake_qmp(mode: Misbehaviour) -> (Address, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Address::Tcp(listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        // The first connection is loadgen's pre-flight check; serve until one sent requests.
        for stream in listener.incoming() {
            if serve(stream.unwrap(), mode) > 0 {
                return;
            }
        }
    });
    (addr, handle)
}

/// Serves one connection until it closes; returns how many requests it received.
fn serve(stream: TcpStream, mode: Misbehaviour) -> usize {
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut out = stream.try_clone().unwrap();
    let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 0}, "package": "fake"}, "capabilities": ["oob"]}}"#;
    if write!(out, "{greeting}\r\n").is_err() {
        return 0;
    }
    let mut held = None;
    let mut requests = 0;
    for (n, line) in BufReader::new(stream).lines().enumerate() {
        let Ok(line) = line else { return requests };
        let request: Value = serde_json::from_str(&line).unwrap();
        let Some(id) = request.get("id").and_then(Value::as_u64) else {
            write!(out, "{{\"return\": {{}}}}\r\n").unwrap();
            continue;
        };
        requests += 1;
        let ids = match mode {
            Misbehaviour::SwapPairs => match held.take() {
                None => {
                    held = Some(id);
                    vec![]
                }
                Some(first) => vec![id, first],
            },
            Misbehaviour::Duplicate => vec![id, id],
            Misbehaviour::WrongIds if n % 5 == 0 => vec![id, id + 1_000_000],
            Misbehaviour::WrongIds => vec![id],
        };
        for id in ids {
            if write!(out, "{{\"return\": {{}}, \"id\": {id}}}\r\n").is_err() {
                return requests;
            }
        }
    }
    requests
}

/// One connection, 100/s in-band for 0.5 s: exactly 50 requests.
fn misbehaving_run(mode: Misbehaviour) -> loadgen::RunSummary {
    let run = fake_qmp_run(mode, None);
    assert!(!run.summary.passed(), "misbehaviour must fail the run:\n{}", run.table());
    run.summary
}

/// [`misbehaving_run`] with an explicit `verify_order`.
fn fake_qmp_run(mode: Misbehaviour, verify_order: Option<bool>) -> loadgen::Run {
    let (addr, server) = fake_qmp(mode);
    let cfg = RunConfig {
        connections: 1,
        duration: Duration::from_millis(500),
        lanes: vec![Lane::new("status", "query-status", None, false).with_rate(100.0)],
        verify_order,
        ..short_config(vec![addr], vec![])
    };
    let run = loadgen::run(&cfg).expect("run");
    server.join().unwrap();
    assert_eq!(run.summary.total.counts.sent, 50, "{}", run.table());
    run
}

#[test]
fn qmp_order_check_can_be_switched_off() {
    let run = fake_qmp_run(Misbehaviour::SwapPairs, Some(false));
    let s = &run.summary;
    assert!(s.passed(), "{}", run.table());
    assert_eq!((s.total.counts.ok, s.verification.out_of_order), (50, 0));
    assert!(!s.checks.order && s.checks.ids, "{:?}", s.checks);
    assert!(
        run.table().contains("in-band order not checked (--no-verify-order)"),
        "{}",
        run.table()
    );
}

#[test]
fn detects_reordered_in_band_replies() {
    let s = misbehaving_run(Misbehaviour::SwapPairs);
    assert_eq!(s.verification.out_of_order, 25);
    assert_eq!((s.total.counts.ok, s.verification.duplicates), (50, 0));
    assert!(s.failures.iter().any(|f| f.contains("out of order")), "{:?}", s.failures);
}

#[test]
fn detects_duplicate_replies() {
    let s = misbehaving_run(Misbehaviour::Duplicate);
    assert_eq!((s.verification.duplicates, s.verification.out_of_order), (50, 0));
    assert_eq!(s.total.counts.ok, 50);
}

#[test]
fn detects_unknown_reply_ids() {
    let s = misbehaving_run(Misbehaviour::WrongIds);
    assert_eq!(s.verification.unknown_ids, 10);
    assert_eq!(s.total.counts.ok, 50);
}

/// An OVS-style JSON-RPC server: no separators between messages, an `echo` probe to the
/// client first, replies with `"error": null`. Serves until a connection sent requests.
fn fake_ovs() -> (Address, thread::JoinHandle<u64>) {
    fake_ovs_with(Answer::InOrder)
}

/// How the fake OVS server answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    /// Each request at once.
    InOrder,
    /// In pairs, second first (as ovsdb-server does for a `transact` then a `list_dbs`).
    SwapPairs,
    /// Each request twice.
    Twice,
}

fn fake_ovs_with(answer: Answer) -> (Address, thread::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Address::Tcp(listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        for stream in listener.incoming() {
            let (requests, echoed) = serve_jsonrpc(stream.unwrap(), answer);
            if requests > 0 {
                assert!(echoed, "the client must answer the server's echo probe");
                return requests;
            }
        }
        0
    });
    (addr, handle)
}

/// Returns (requests answered, whether our echo probe got its reply).
fn serve_jsonrpc(stream: TcpStream, answer: Answer) -> (u64, bool) {
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut out = stream.try_clone().unwrap();
    if out.write_all(br#"{"id":"echo","method":"echo","params":[]}"#).is_err() {
        return (0, false);
    }
    let (mut requests, mut echoed, mut held) = (0, false, None);
    for value in serde_json::Deserializer::from_reader(stream).into_iter::<Value>() {
        let Ok(msg) = value else { break };
        if msg["id"] == "echo" {
            echoed = msg["result"] == json!([]) && msg["error"].is_null();
            continue;
        }
        assert_eq!(msg["method"], "work");
        assert_eq!(msg["params"], json!([{"us": 1}]));
        requests += 1;
        let ids = match (answer, held.take()) {
            (Answer::InOrder, _) => vec![msg["id"].clone()],
            (Answer::Twice, _) => vec![msg["id"].clone(), msg["id"].clone()],
            (Answer::SwapPairs, None) => {
                held = Some(msg["id"].clone());
                vec![]
            }
            (Answer::SwapPairs, Some(first)) => vec![msg["id"].clone(), first],
        };
        for id in ids {
            let reply = json!({"id": id, "result": {}, "error": null});
            if out.write_all(reply.to_string().as_bytes()).is_err() {
                return (requests, echoed);
            }
        }
    }
    (requests, echoed)
}

#[test]
fn jsonrpc_against_an_ovs_style_server() {
    let (addr, server) = fake_ovs();
    let cfg = RunConfig {
        protocol: loadgen::Protocol::JsonRpc,
        connections: 1,
        duration: Duration::from_millis(500),
        lanes: vec![Lane::new("work", "work", Some(json!({"us": 1})), false).with_rate(100.0)],
        ..short_config(vec![addr], vec![])
    };
    let run = loadgen::run(&cfg).expect("run");
    assert_eq!(server.join().unwrap(), 50);
    assert!(run.summary.passed(), "{}", run.table());
    assert_eq!(run.summary.total.counts.ok, 50);
}

/// One JSON-RPC connection at 100/s for 0.5 s (exactly 50 requests) against `answer`.
fn jsonrpc_run(answer: Answer, verify_order: Option<bool>) -> loadgen::Run {
    let (addr, server) = fake_ovs_with(answer);
    let cfg = RunConfig {
        protocol: loadgen::Protocol::JsonRpc,
        connections: 1,
        duration: Duration::from_millis(500),
        lanes: vec![Lane::new("work", "work", Some(json!({"us": 1})), false).with_rate(100.0)],
        verify_order,
        ..short_config(vec![addr], vec![])
    };
    let run = loadgen::run(&cfg).expect("run");
    assert_eq!(server.join().unwrap(), 50);
    assert_eq!(run.summary.total.counts.sent, 50, "{}", run.table());
    run
}

#[test]
fn jsonrpc_replies_out_of_order_pass_by_default() {
    let run = jsonrpc_run(Answer::SwapPairs, None);
    let s = &run.summary;
    assert!(s.passed(), "JSON-RPC promises no order:\n{}", run.table());
    assert_eq!((s.total.counts.ok, s.verification.out_of_order), (50, 0));
    assert_eq!(s.verification.violations(), 0);
    assert_eq!(
        (s.checks.ids, s.checks.order, s.checks.order_reason.as_str()),
        (true, false, "the protocol promises no reply order")
    );
    let table = run.table();
    assert!(table.contains("out of order not checked"), "{table}");
}

#[test]
fn jsonrpc_order_check_on_request() {
    let run = jsonrpc_run(Answer::SwapPairs, Some(true));
    let s = &run.summary;
    assert_eq!((s.total.counts.ok, s.verification.out_of_order), (50, 25), "{}", run.table());
    assert!(!s.passed());
    assert_eq!(s.failures, vec!["25 in-band replies out of order"]);
}

#[test]
fn jsonrpc_duplicates_fail_without_the_order_check() {
    let run = jsonrpc_run(Answer::Twice, None);
    let s = &run.summary;
    assert_eq!((s.total.counts.ok, s.verification.duplicates), (50, 50), "{}", run.table());
    assert_eq!(s.verification.out_of_order, 0);
    assert_eq!(s.failures, vec!["50 duplicate replies"]);
}

#[test]
fn server_cost_of_the_embedded_engine_counts_only_its_threads() {
    let cfg = RunConfig { remotes: vec![], ..short_config(vec![], exact_lanes()) };
    let run = loadgen::run(&cfg).expect("run");
    let s = &run.summary;
    assert!(s.passed(), "{}", run.table());
    let cost = s.server.as_ref().expect("automatic for the embedded engine");
    assert_eq!(cost.replies, 200, "the measured replies are the denominator");
    assert_eq!(cost.replies, s.total.corrected.count);
    assert!(cost.target.starts_with("embedded engine threads"), "{}", cost.target);
    // The engine's parser threads and its executor, none of loadgen's.
    assert!(cost.threads >= 2, "{cost:?}");
    assert!(cost.samples >= 5, "1 s window sampled every 100 ms: {cost:?}");
    assert!(cost.voluntary_switches > 0, "parsers sleep in epoll between requests: {cost:?}");
    assert!((cost.cpu_us_per_reply - cost.cpu_us / 200.0).abs() < 1e-9);
    assert!(cost.peak_rss_kib > 0 && cost.peak_fds > 0, "{cost:?}");
    assert!(run.table().contains("server cost, embedded engine threads"), "{}", run.table());
}

#[test]
fn server_pid_samples_a_whole_process() {
    let server = start_server();
    let cfg = RunConfig {
        server_pids: vec![std::process::id()],
        ..short_config(vec![server.addr.clone()], exact_lanes())
    };
    let run = loadgen::run(&cfg).expect("run");
    let cost = run.summary.server.as_ref().expect("--server-pid given");
    assert_eq!(cost.replies, 200);
    assert!(cost.target.starts_with(&format!("pid {} (", std::process::id())), "{}", cost.target);
    assert_eq!(cost.memory_scope, "server process");
    assert!(cost.threads >= 4, "test harness, engine and loadgen threads: {cost:?}");
    assert!(cost.voluntary_switches > 0 && !cost.vanished, "{cost:?}");
    let saved = serde_json::to_value(&run.summary).unwrap();
    assert_eq!(saved["server"]["replies"], 200);
}

#[test]
fn the_report_says_whether_the_driver_spun() {
    let server = start_server();
    for (spin, used, reason) in
        [(loadgen::Spin::Off, false, "--spin off"), (loadgen::Spin::On, true, "--spin on")]
    {
        let cfg = RunConfig {
            spin,
            duration: Duration::from_millis(300),
            ..short_config(vec![server.addr.clone()], exact_lanes())
        };
        let run = loadgen::run(&cfg).expect("run");
        assert!(run.summary.passed(), "{}", run.table());
        assert_eq!((run.summary.spin.spin, run.summary.spin.reason.as_str()), (used, reason));
        assert!(
            run.table().contains(&format!("early-wake spin {}", if used { "on" } else { "off" }))
        );
    }
}

/// A unique, not yet existing directory under the system temp dir.
fn fresh_dir(what: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loadgen-it-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn sweep_runs_each_rate_into_its_own_folder_and_finds_the_knee() {
    let server = start_server();
    let lanes = vec![
        Lane::new("work", "work", Some(json!({"us": 10})), false),
        Lane::new("ping", "ping", None, true),
    ];
    let cfg = RunConfig {
        duration: Duration::from_millis(500),
        ..short_config(vec![server.addr.clone()], lanes)
    };
    let out = fresh_dir("sweep");
    let plan = loadgen::SweepPlan {
        rates: loadgen::SweepRates::List(vec![200.0, 400.0]),
        p99_bound: Duration::from_secs(1),
        min_achieved: 0.95,
    };
    let sweep = loadgen::sweep(&cfg, &plan, &out, loadgen::run).expect("sweep");
    assert_eq!(sweep.steps.len(), 2);
    // 2 connections, two lanes of half the rate each: 100/s and 200/s per lane, 0.5 s.
    let sent: Vec<u64> = sweep.steps.iter().map(|s| s.summary.total.counts.sent).collect();
    assert_eq!(sent, vec![100, 200]);
    assert!(sweep.steps.iter().all(|s| s.saturated.is_none() && s.summary.passed()));
    assert_eq!(sweep.knee, None, "nothing saturated");
    for file in ["step-00-200/summary.json", "step-01-400/work.hgrm", "sweep.md", "sweep.txt"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    assert!(out.join("sweep.png").is_file() && out.join("sweep.svg").is_file());
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(md.contains("knee: not reached"), "{md}");

    // A bound nothing can meet: the doubling sweep stops at its first, saturated, step.
    let out2 = fresh_dir("sweep");
    let plan = loadgen::SweepPlan {
        rates: loadgen::SweepRates::Doubling { start: 200.0, max_steps: 4 },
        p99_bound: Duration::from_nanos(1),
        ..plan
    };
    let sweep = loadgen::sweep(&cfg, &plan, &out2, loadgen::run).expect("sweep");
    assert_eq!((sweep.steps.len(), sweep.knee), (1, None));
    assert!(sweep.steps[0].saturated.as_deref().unwrap().contains("p99"), "{:?}", sweep.steps[0]);
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_dir_all(&out2).unwrap();

    let fixed = RunConfig { lanes: exact_lanes(), ..cfg };
    let err = loadgen::sweep(&fixed, &plan, &fresh_dir("sweep"), loadgen::run).unwrap_err();
    assert!(err.to_string().contains("fixed rate"), "{err}");
}
