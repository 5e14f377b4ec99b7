//! loadgen's etcd protocol against a fake HTTP/JSON gateway on a real socket: the requests it
//! writes (method, path, headers, body), keep-alive, positional matching of id-less replies,
//! error statuses, and replies it cannot frame or parse.
//!
//! Schedules are exact (100/s per lane over 2 connections for 1 s), so counts are asserted
//! exactly. The fake server reads with a timeout and stops accepting when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use loadgen::{Address, ErrorText, Lane, Protocol, RunConfig};
use serde_json::{Value, json};
use tests::READ_TIMEOUT;

/// What the fake gateway answers to the `n`th request of the whole run (from 0).
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// `200` with a put reply, headers and body in separate writes (split framing).
    Ok,
    /// `503` with an etcd error body for every fifth request, `200` otherwise.
    UnavailableEveryFifth,
    /// `200` with a chunked body: not framable by Content-Length.
    Chunked,
    /// `200` with a body that is not JSON.
    NotJson,
}

/// A fake etcd gateway on 127.0.0.1; stops accepting when dropped.
struct FakeGateway {
    addr: Address,
    /// Requests received, over all connections.
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl FakeGateway {
    fn start(answer: Answer) -> FakeGateway {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = Address::Tcp(listener.local_addr().unwrap());
        let (requests, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (count, stopped) = (requests.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            let mut handlers = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let count = count.clone();
                        handlers.push(thread::spawn(move || serve(stream, answer, &count)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            for h in handlers {
                h.join().unwrap();
            }
        });
        FakeGateway { addr, requests, stop, acceptor: Some(acceptor) }
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take()
            && let Err(panic) = acceptor.join()
            && !thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Serves one keep-alive connection until the client closes it (or a read times out).
fn serve(stream: TcpStream, answer: Answer, count: &AtomicU64) {
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(body) = read_request(&mut reader) {
        assert_eq!(body, json!({"key": "bG9hZGdlbg==", "value": "MQ=="}));
        let n = count.fetch_add(1, Ordering::Relaxed);
        let sent = match answer {
            Answer::Ok => respond_split(&mut out, 200, PUT_REPLY),
            Answer::UnavailableEveryFifth if n.is_multiple_of(5) => {
                respond(&mut out, 503, r#"{"error":"etcdserver: leader changed","code":14}"#)
            }
            Answer::UnavailableEveryFifth => respond(&mut out, 200, PUT_REPLY),
            Answer::Chunked => out.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            ),
            Answer::NotJson => respond(&mut out, 200, "ok"),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// What etcd 3.4 answers to a put.
const PUT_REPLY: &str =
    r#"{"header":{"cluster_id":"1","member_id":"2","revision":"3","raft_term":"2"}}"#;

/// Reads one request, checks its request line and headers, returns its JSON body; `None`
/// at the end of the connection.
fn read_request(reader: &mut impl BufRead) -> Option<Value> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    assert_eq!(line, "POST /v3/kv/put HTTP/1.1\r\n");
    let (mut length, mut host) = (None, false);
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let Some((name, value)) = line.trim_end().split_once(':') else { break };
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse::<usize>().ok(),
            "host" => host = true,
            "content-type" => assert_eq!(value.trim(), "application/json"),
            _ => {}
        }
    }
    assert!(host, "HTTP/1.1 requires Host");
    let mut body = vec![0; length.expect("Content-Length")];
    reader.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).expect("a JSON body"))
}

fn respond(out: &mut impl Write, status: u16, body: &str) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n");
    write!(out, "{head}Content-Length: {}\r\n\r\n{body}", body.len())
}

/// The same response in three writes: part of the head, the rest of it, the body.
fn respond_split(out: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    out.set_nodelay(true)?;
    out.write_all(format!("HTTP/1.1 {status} OK\r\nContent-Le").as_bytes())?;
    out.write_all(format!("ngth: {}\r\n\r\n", body.len()).as_bytes())?;
    out.write_all(body.as_bytes())
}

/// Two connections, one put lane at 200/s for 1 s: exactly 100 requests per connection.
fn etcd_config(gateway: &FakeGateway) -> RunConfig {
    RunConfig {
        remotes: vec![gateway.addr.clone()],
        protocol: Protocol::Etcd,
        lanes: vec![
            Lane::new(
                "put",
                "/v3/kv/put",
                Some(json!({"key": "bG9hZGdlbg==", "value": "MQ=="})),
                false,
            )
            .with_rate(200.0),
        ],
        connections: 2,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(2),
        seed: Some(7),
        label: "it-etcd".into(),
        ..RunConfig::default()
    }
}

#[test]
fn puts_over_keep_alive_connections_are_matched_in_order() {
    let gateway = FakeGateway::start(Answer::Ok);
    let run = loadgen::run(&etcd_config(&gateway)).expect("run");
    let s = &run.summary;
    assert!(s.passed(), "{}", run.table());
    assert_eq!((s.total.counts.sent, s.total.counts.ok, s.total.corrected.count), (200, 200, 200));
    assert_eq!(gateway.requests.load(Ordering::Relaxed), 200);
    let remote = &s.remotes[0].counts;
    assert_eq!((remote.sessions, remote.reconnects), (2, 0), "one keep-alive session each");
    assert_eq!(s.protocol, "etcd");
    assert!(!s.checks.ids && !s.checks.order, "{:?}", s.checks);
    assert!(run.table().contains("replies matched by position"), "{}", run.table());
}

#[test]
fn error_statuses_are_error_replies() {
    let gateway = FakeGateway::start(Answer::UnavailableEveryFifth);
    let run = loadgen::run(&etcd_config(&gateway)).expect("run");
    let s = &run.summary;
    assert_eq!((s.total.counts.ok, s.total.counts.errors), (160, 40), "{}", run.table());
    assert_eq!(s.verification.violations(), 0);
    assert_eq!(s.failures, vec!["40 error replies"]);
    let said = ErrorText {
        lane: "put".into(),
        text: "HTTP 503: etcdserver: leader changed".into(),
        count: 40,
    };
    assert_eq!((&s.error_texts.kept, s.error_texts.others), (&vec![said], 0));
    assert!(run.table().contains("  put               40  HTTP 503: etcdserver: leader changed\n"));
}

#[test]
fn a_chunked_reply_drops_the_connection_as_a_protocol_error() {
    let gateway = FakeGateway::start(Answer::Chunked);
    let cfg = RunConfig { expect_errors: true, ..etcd_config(&gateway) };
    let run = loadgen::run(&cfg).expect("run");
    let s = &run.summary;
    assert_eq!(s.total.counts.ok, 0, "{}", run.table());
    assert!(s.verification.protocol_errors > 0 && s.remotes[0].counts.disconnects > 0);
    assert!(!s.passed(), "a protocol error fails even an --expect-errors run");
}

#[test]
fn a_body_that_is_not_json_is_a_protocol_error() {
    let gateway = FakeGateway::start(Answer::NotJson);
    let run = loadgen::run(&etcd_config(&gateway)).expect("run");
    let s = &run.summary;
    let (counts, v) = (&s.total.counts, &s.verification);
    assert_eq!((v.protocol_errors, counts.errors), (200, 200), "{}", run.table());
    assert_eq!((counts.ok, counts.missing), (0, 0), "each still answered its request");
    assert!(!s.passed());
}
