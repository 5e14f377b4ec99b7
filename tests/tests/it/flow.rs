//! Flow control without loss (docs/protocol.md#flow-control-and-parking): beyond the in-flight
//! limit requests park in their connection while reading and OOB go on; a full executor queue never
//! blocks a parser thread; a client that does not read its replies pauses only its own reads.

use std::thread;

use serde_json::json;
use tests::{Client, READ_TIMEOUT, start_server_with, test_config};

/// `n` in-band `counter-add` requests with ids 0..n.
fn counter_adds(n: usize) -> String {
    (0..n)
        .map(|i| format!(r#"{{"execute":"counter-add","arguments":{{"delta":1}},"id":{i}}}"#))
        .collect()
}

/// Reads `n` counter-add replies and checks ids 0..n and values `first..first+n` in order.
fn expect_counter_replies(client: &mut Client, n: usize, first: i64) {
    for i in 0..n {
        let reply = client.recv();
        assert_eq!(reply, json!({"return": {"value": first + i as i64}, "id": i}));
    }
}

#[test]
fn requests_beyond_the_in_flight_limit_park_while_oob_goes_on() {
    let mut config = test_config();
    config.limits.max_inflight_per_conn = 2;
    let server = start_server_with(config);
    let mut client = Client::negotiated(&server.addr);
    client.send(r#"{"execute":"stall","id":"s"}"#);
    client.send(&counter_adds(50));
    assert_eq!(client.request(r#"{"exec-oob":"ping","id":"p"}"#), json!({"return":{},"id":"p"}));
    let stats = client.request(r#"{"exec-oob":"query-stats"}"#);
    assert_eq!(stats["return"]["queue"]["parked"], 49, "stall + 1 in flight, 49 parked");
    tests::wait_until_executor_busy(&mut client);
    assert_eq!(client.request(r#"{"exec-oob":"release"}"#), json!({"return":{"released":1}}));
    assert_eq!(client.recv(), json!({"return":{"released":true},"id":"s"}));
    expect_counter_replies(&mut client, 50, 1);
}

#[test]
fn a_full_executor_queue_parks_jobs_and_never_blocks_the_parser_thread() {
    let mut config = test_config();
    config.limits.queue_capacity = 4;
    let server = start_server_with(config);
    let mut client = Client::negotiated(&server.addr);
    let mut other = Client::negotiated(&server.addr);
    client.send(r#"{"execute":"stall","id":"s"}"#);
    tests::wait_until_executor_busy(&mut client);
    client.send(&counter_adds(100));
    other.send(&counter_adds(20));
    // Both connections' threads are still serving OOB.
    assert_eq!(client.request(r#"{"exec-oob":"ping","id":1}"#), json!({"return":{},"id":1}));
    assert_eq!(other.request(r#"{"exec-oob":"ping","id":2}"#), json!({"return":{},"id":2}));
    assert_eq!(other.request(r#"{"exec-oob":"release"}"#), json!({"return":{"released":1}}));
    assert_eq!(client.recv(), json!({"return":{"released":true},"id":"s"}));
    let mut values = Vec::new();
    for (conn, n) in [(&mut client, 100), (&mut other, 20)] {
        for i in 0..n {
            let reply = conn.recv();
            assert_eq!(reply["id"], json!(i));
            values.push(reply["return"]["value"].as_i64().unwrap());
        }
    }
    values.sort_unstable();
    assert_eq!(values, (1..=120).collect::<Vec<_>>());
}

#[test]
fn a_client_that_does_not_read_pauses_only_itself_and_loses_nothing() {
    const N: usize = 20_000;
    let mut config = test_config();
    config.limits.max_message_bytes = 4096;
    config.limits.conn_budget_bytes = 64 * 1024;
    let server = start_server_with(config);
    let mut lazy = Client::negotiated(&server.addr);
    let mut sender = lazy.clone_writer();
    // ~1.2 MB of requests whose replies (~100 B each, 2 MB) far exceed the budget and the
    // socket buffers: the engine must stop reading this socket, not grow or drop.
    let burst =
        (0..N).map(|i| format!(r#"{{"execute":"query-version","id":{i}}}"#)).collect::<String>();
    let writer = thread::spawn(move || sender.send(&burst));
    let mut polite = Client::negotiated(&server.addr);
    for i in 0..20 {
        let reply = polite.request(&format!(r#"{{"exec-oob":"ping","id":{i}}}"#));
        assert_eq!(reply, json!({"return":{},"id":i}));
        let reply = polite.request(r#"{"execute":"counter-add","arguments":{"delta":1}}"#);
        assert_eq!(reply, json!({"return":{"value": i + 1}}));
    }
    for i in 0..N {
        let reply = lazy.recv();
        assert_eq!(reply["id"], json!(i));
        assert_eq!(reply["return"]["package"], "ooblane 0.1.0");
    }
    writer.join().unwrap();
}

#[test]
fn a_session_that_never_reads_its_events_is_disconnected_not_buffered_forever() {
    let mut config = test_config();
    config.limits.max_message_bytes = 16 * 1024;
    config.limits.conn_budget_bytes = 64 * 1024;
    let server = start_server_with(config);
    let mut deaf = Client::negotiated(&server.addr);
    let mut emitter = Client::negotiated(&server.addr);
    let data = "x".repeat(8 * 1024);
    let emit = format!(
        r#"{{"execute":"emit-event","arguments":{{"event":"BIG","data":{{"d":"{data}"}}}}}}"#
    );
    // Far more than the deaf session's socket buffers and 4 budgets (256 KiB) can hold.
    for _ in 0..2_000 {
        emitter.send(&emit);
        assert_eq!(emitter.recv()["event"], "BIG");
        assert_eq!(emitter.recv(), json!({"return": {}}));
    }
    // The deaf session was cut off: reading drains what the kernel held, then end of stream.
    let mut events = 0;
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(deaf.reader(), &mut line).expect("read");
        if n == 0 {
            break;
        }
        events += 1;
    }
    assert!(events < 2_000, "the deaf session was disconnected before all events ({events})");
    // The engine lingers until the deaf client's end of stream (it may still be sending).
    deaf.shutdown_write();
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    loop {
        let stats = emitter.request(r#"{"exec-oob":"query-stats"}"#);
        if stats["return"]["connections"]["open"] == 1 {
            break; // only the emitter is left
        }
        assert!(std::time::Instant::now() < deadline, "the deaf session never closed: {stats}");
        std::thread::yield_now();
    }
}
