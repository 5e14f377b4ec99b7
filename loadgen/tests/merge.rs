//! Two `loadgen` processes with the same `--start-at` against one in-process engine, then
//! `loadgen merge`: the merged counts are the sums, and the merged percentiles are exactly
//! those of the two runs' saved histograms added together.
//!
//! Each process runs 1 s at exact rates (every schedule period divides the run), so counts
//! are asserted exactly. Every wait is bounded; the directories are removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use serde_json::Value;

/// Longest a loadgen process may take (1 s run, start delay, drain, debug build).
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

fn engine() -> ooblane::ServerHandle {
    let config = ooblane::Config {
        qmp: vec!["tcp:127.0.0.1:0".parse().expect("valid address")],
        threads: 2,
        pin: false,
        ..ooblane::Config::default()
    };
    ooblane::Server::start(config, ooblane::demo::registry()).expect("engine starts")
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadgen-merge-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn loadgen(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen")
}

/// Waits (bounded) and returns (exit code, stdout + stderr).
fn finish(mut child: Child) -> (i32, String) {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadgen did not finish within {PROCESS_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn summary(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary.json"))
        .expect("valid summary")
}

/// The histogram tagged `tag` in a run's `histograms.hlog`.
fn saved(dir: &Path, tag: &str) -> Histogram<u64> {
    let bytes = std::fs::read(dir.join("histograms.hlog")).expect("histograms.hlog");
    for entry in IntervalLogIterator::new(&bytes) {
        if let LogEntry::Interval(h) = entry.expect("valid log")
            && h.tag().map(|t| t.as_str()) == Some(tag)
        {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(h.encoded_histogram())
                .expect("base64");
            return Deserializer::new().deserialize(&mut raw.as_slice()).expect("histogram");
        }
    }
    panic!("no histogram '{tag}' in {}", dir.display());
}

#[test]
fn two_processes_with_one_start_time_merge_exactly() {
    let engine = engine();
    let remote = engine.qmp_addrs()[0].to_string();
    // A whole second, at least 2 s ahead: both processes connect first, then start together.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let start_at = (now + 3).to_string();
    let (a, b, merged) = (fresh_dir("a"), fresh_dir("b"), fresh_dir("merged"));
    let pid = std::process::id().to_string();
    let run = |out: &Path, sample: bool| {
        let mut args = vec![
            "-r",
            &remote,
            "--lane",
            r#"name=work,cmd=work,args={"us":10},rate=100"#,
            "--lane",
            "name=ping,cmd=ping,oob,rate=100",
            "-c",
            "2",
            "--warmup",
            "0s",
            "-d",
            "1s",
            "--start-at",
            &start_at,
            "-o",
            out.to_str().unwrap(),
        ];
        if sample {
            // The engine runs in this test process.
            args.extend(["--server-pid", &pid]);
        }
        loadgen(&args)
    };
    let (pa, pb) = (run(&a, true), run(&b, false));
    let ((ca, ta), (cb, tb)) = (finish(pa), finish(pb));
    assert_eq!((ca, cb), (0, 0), "{ta}\n{tb}");
    let (sa, sb) = (summary(&a), summary(&b));
    let started = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(now + 3));
    assert_eq!(sa["started"], started.to_string(), "time zero is --start-at");
    assert_eq!(sb["started"], sa["started"]);

    let (code, text) = finish(loadgen(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("PASS"), "{text}");
    let m = summary(&merged);
    for (i, lane) in ["work", "ping"].into_iter().enumerate() {
        let row = &m["lanes"][i];
        assert_eq!(row["name"], lane);
        // Sums: 100 per lane per process.
        for key in ["sent", "ok"] {
            let sum = sa["lanes"][i]["counts"][key].as_u64().unwrap()
                + sb["lanes"][i]["counts"][key].as_u64().unwrap();
            assert_eq!((row["counts"][key].as_u64().unwrap(), sum), (200, 200), "{lane} {key}");
        }
        assert_eq!(row["target_rate"], 200.0);
        // Percentiles of the added histograms, exactly.
        for kind in ["corrected", "service"] {
            let mut added = saved(&a, &format!("{kind}.{lane}"));
            added.add(saved(&b, &format!("{kind}.{lane}"))).unwrap();
            assert_eq!(added.len(), 200);
            let p = &row[kind];
            assert_eq!(p["count"], 200);
            for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
                let want = added.value_at_quantile(q) as f64 / 1e3;
                assert_eq!(p[key].as_f64().unwrap(), want, "{lane} {kind} {key}");
            }
            assert_eq!(p["max"].as_f64().unwrap(), added.max() as f64 / 1e3);
            assert_eq!(saved(&merged, &format!("{kind}.{lane}")), added, "saved merged histogram");
        }
    }
    assert_eq!(m["total"]["counts"]["sent"], 400);
    // The one server's CPU over the common window, divided by both processes' replies.
    let (server, sampled) = (&m["server"], &sa["server"]);
    assert_eq!((server["replies"].as_u64(), sampled["replies"].as_u64()), (Some(400), Some(200)));
    assert_eq!(server["cpu_us"], sampled["cpu_us"]);
    // Within float parsing: serde_json reads decimals back to the nearest double or one off.
    let (per_reply, want) =
        (server["cpu_us_per_reply"].as_f64().unwrap(), sampled["cpu_us"].as_f64().unwrap() / 400.0);
    assert!((per_reply - want).abs() <= 1e-12 * want.abs(), "{per_reply} vs {want}");
    assert!(server["target"].as_str().unwrap().ends_with("(sampled by 1 of 2 runs)"), "{server}");
    assert_eq!(m["connections"], 4);
    assert_eq!(m["remotes"].as_array().unwrap().len(), 1, "one engine, one remote row");
    assert_eq!(m["remotes"][0]["counts"]["sessions"], 4);
    for key in ["duplicates", "unknown_ids", "out_of_order", "protocol_errors"] {
        assert_eq!(m["verification"][key], 0);
    }
    for file in ["report.txt", "work.hgrm", "intervals.hlog", "percentiles.png"] {
        assert!(merged.join(file).is_file(), "{file}");
    }
    // The interval logs were aligned by time zero: one interval, both processes' replies in it.
    let work_rows = |dir: &Path| -> Vec<u64> {
        let csv = std::fs::read_to_string(dir.join("intervals.csv")).unwrap();
        let rows = csv.lines().filter(|l| l.starts_with("0.000,work,"));
        rows.map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect()
    };
    let (ia, ib) = (work_rows(&a), work_rows(&b));
    assert_eq!(work_rows(&merged), vec![ia[0] + ib[0]]);
    engine.shutdown();
    for dir in [a, b, merged] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
