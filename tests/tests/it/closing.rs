//! Lossless close: whenever the engine ends a connection that may still have unread input, it
//! writes what it owes, sends FIN and discards input until the client's end of stream, so the
//! client reads every reply and then a clean end of stream, never a reset.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use ooblane::Address;
use serde_json::{Value, json};
use tests::{Client, READ_TIMEOUT, start_jsonrpc_server, start_jsonrpc_server_with, start_server};

/// Clients pipelining during the shutdown.
const CLIENTS: usize = 4;
/// Replies each client reads before the shutdown starts: the engine is mid-stream.
const BEFORE_SHUTDOWN: usize = 200;
/// Requests per write: enough that the engine has read more than it has answered.
const PER_WRITE: usize = 64;
/// Writes per client at most (bounds the test if the engine never stops reading).
const MAX_WRITES: usize = 2_000;

/// What a pipelining client saw: its replies' values in order, and how its stream ended.
struct Seen {
    values: Vec<i64>,
    shutdown_event: bool,
}

fn tcp(addr: &Address) -> TcpStream {
    let Address::Tcp(addr) = addr else { panic!("tcp address expected") };
    let stream = TcpStream::connect_timeout(addr, READ_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// Negotiates, then writes `counter-add` requests (ids counting up) until the engine's end of
/// stream is seen by the reader, then shuts its own sending side, as a well-behaved client
/// does. Reads every line until end of stream; a reset fails the test.
fn pipeline(addr: &Address, progress: mpsc::Sender<()>) -> Seen {
    let stream = tcp(addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap(); // greeting
    (&stream).write_all(br#"{"execute":"qmp_capabilities"}"#).unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "{\"return\":{}}\r\n");
    let eof = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stream, eof) = (stream.try_clone().unwrap(), Arc::clone(&eof));
        std::thread::spawn(move || write_until_eof(stream, &eof))
    };
    let mut seen = Seen { values: Vec::new(), shutdown_event: false };
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "a clean end of stream expected, got {e} after {} replies",
                seen.values.len()
            ),
        }
        let reply: Value = serde_json::from_str(&line).unwrap();
        if reply["event"] == "SHUTDOWN" {
            seen.shutdown_event = true;
            continue;
        }
        assert_eq!(reply["id"], json!(seen.values.len()), "replies in request order");
        seen.values.push(reply["return"]["value"].as_i64().unwrap());
        if seen.values.len() == BEFORE_SHUTDOWN {
            progress.send(()).unwrap();
        }
    }
    eof.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    seen
}

fn write_until_eof(mut stream: TcpStream, eof: &AtomicBool) {
    let mut next = 0;
    for _ in 0..MAX_WRITES {
        if eof.load(Ordering::Relaxed) {
            break;
        }
        let mut chunk = String::new();
        for _ in 0..PER_WRITE {
            chunk +=
                &format!(r#"{{"execute":"counter-add","arguments":{{"delta":1}},"id":{next}}}"#);
            next += 1;
        }
        match stream.write_all(chunk.as_bytes()) {
            Ok(()) => {}
            // The engine closed after our FIN raced its deadline: nothing more to send.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

#[test]
fn shutdown_while_clients_pipeline_loses_no_reply_and_ends_with_fin() {
    let server = start_server();
    let addr = server.addr.clone();
    let (progress, started) = mpsc::channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, progress) = (addr.clone(), progress.clone());
            std::thread::spawn(move || pipeline(&addr, progress))
        })
        .collect();
    for _ in 0..CLIENTS {
        started.recv_timeout(READ_TIMEOUT).expect("every client gets replies");
    }
    let stopper = std::thread::spawn(move || server.shutdown());
    let seen: Vec<Seen> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    stopper.join().unwrap();
    let mut values: Vec<i64> = seen.iter().flat_map(|s| s.values.iter().copied()).collect();
    values.sort_unstable();
    let total = values.len() as i64;
    let expected: Vec<i64> = (1..=total).collect();
    assert!(values == expected, "every executed add answered once: {total} replies, no gap");
    assert!(seen.iter().all(|s| s.shutdown_event), "every client got SHUTDOWN");
}

#[test]
fn a_json_rpc_protocol_error_reply_survives_input_sent_after_it() {
    let server = start_jsonrpc_server();
    let mut client = Client::jsonrpc(&server.addr);
    let more = r#"{"id":9,"method":"ping","params":[]}"#.repeat(1_000);
    client.send(&format!(r#"{{"id":1,"method":"ping","params":[]}}]{more}"#));
    for _ in 0..16 {
        client.send(&more); // the engine no longer handles these; they must not reset it
    }
    assert_eq!(client.recv(), json!({"id":1,"result":{},"error":null}));
    let error = client.recv();
    assert_eq!(error["id"], json!(null));
    assert_eq!(error["error"]["details"], "JSON parse error, invalid JSON at byte 0");
    client.expect_eof();
}

#[test]
fn a_refusal_at_the_connection_cap_survives_input_sent_before_it() {
    let mut config = tests::test_config();
    config.limits.max_connections = 1;
    let server = start_jsonrpc_server_with(config);
    let mut first = Client::jsonrpc(&server.addr);
    assert_eq!(
        first.request(r#"{"id":1,"method":"ping","params":[]}"#),
        json!({"id":1,"result":{},"error":null})
    );
    let mut refused = Client::jsonrpc(&server.addr);
    refused.send(&r#"{"id":2,"method":"ping","params":[]}"#.repeat(1_000));
    let error = refused.recv();
    assert_eq!(error["id"], json!(null));
    assert_eq!(error["error"]["details"], "too many connections (limit 1)");
    refused.expect_eof();
}
