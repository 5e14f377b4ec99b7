//! Every byte a connection causes is on its budget: a client that floods and does not read
//! holds at most about its budget, and loses nothing once it reads.

use std::io::BufRead;

use serde_json::json;
use tests::{Client, READ_TIMEOUT, start_server_with, test_config};

/// Small budget for the test (the default is 4 MiB): the flood is 16 budgets.
const BUDGET: usize = 64 * 1024;
/// One-byte bad messages sent without reading.
const FLOOD: usize = 1 << 20;

#[test]
fn a_flood_of_one_byte_bad_messages_is_held_to_the_budget_and_fully_answered() {
    let mut config = test_config();
    config.limits.max_message_bytes = 16 * 1024;
    config.limits.conn_budget_bytes = BUDGET;
    let server = start_server_with(config);
    let mut probe = Client::negotiated(&server.addr);
    let mut flooder = Client::negotiated(&server.addr);
    let mut writer = flooder.clone_writer();
    let sender = std::thread::spawn(move || writer.send_bytes(&vec![b']'; FLOOD]));
    // The engine stops reading once the flooder is over budget; the sender then blocks in
    // the kernel's buffers. Wait until the engine has held the flooder at its budget.
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    loop {
        let stats = probe.request(r#"{"exec-oob":"query-stats"}"#)["return"].clone();
        let peak = stats["memory"]["peak-conn"].as_u64().unwrap() as usize;
        assert!(peak <= 2 * BUDGET, "one connection held {peak} bytes, budget {BUDGET}");
        if stats["requests"]["bad-input"].as_u64().unwrap() > 0 && peak >= BUDGET {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the flood never reached the budget");
        std::thread::yield_now();
    }
    // Now read: every bad byte gets its error, exactly once, then the session still works.
    let expected =
        r#"{"error":{"class":"GenericError","desc":"JSON parse error, invalid JSON at byte 0"}}"#;
    let reader = flooder.reader();
    let mut line = String::new();
    for i in 0..FLOOD {
        line.clear();
        reader.read_line(&mut line).expect("read");
        assert_eq!(line.trim_end(), expected, "reply {i}");
    }
    sender.join().unwrap();
    assert_eq!(
        flooder.request(r#"{"execute":"ping","id":"after"}"#),
        json!({"return":{},"id":"after"})
    );
    let stats = probe.request(r#"{"exec-oob":"query-stats"}"#)["return"].clone();
    let peak = stats["memory"]["peak-conn"].as_u64().unwrap() as usize;
    assert!(peak <= 2 * BUDGET, "one connection held {peak} bytes, budget {BUDGET}");
}

#[test]
fn a_client_asking_for_large_replies_without_reading_is_held_to_the_budget() {
    const REQUESTS: usize = 20_000;
    let mut config = test_config();
    config.limits.max_message_bytes = 16 * 1024;
    config.limits.conn_budget_bytes = 4 * BUDGET;
    let server = start_server_with(config);
    let mut probe = Client::negotiated(&server.addr);
    let mut greedy = Client::negotiated(&server.addr);
    let mut writer = greedy.clone_writer();
    let requests: String =
        (0..REQUESTS).map(|i| format!(r#"{{"execute":"query-commands","id":{i}}}"#)).collect();
    let sender = std::thread::spawn(move || writer.send(&requests));
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    loop {
        let stats = probe.request(r#"{"exec-oob":"query-stats"}"#)["return"].clone();
        let peak = stats["memory"]["peak-conn"].as_u64().unwrap() as usize;
        assert!(peak <= 8 * BUDGET, "one connection held {peak} bytes, budget {}", 4 * BUDGET);
        if peak >= 4 * BUDGET {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the replies never reached the budget");
        std::thread::yield_now();
    }
    for i in 0..REQUESTS {
        let reply = greedy.recv();
        assert_eq!(reply["id"], i, "replies in order, each once");
        assert!(reply["return"].is_array());
    }
    sender.join().unwrap();
    let stats = probe.request(r#"{"exec-oob":"query-stats"}"#)["return"].clone();
    let peak = stats["memory"]["peak-conn"].as_u64().unwrap() as usize;
    assert!(peak <= 8 * BUDGET, "one connection held {peak} bytes, budget {}", 4 * BUDGET);
}

/// The server's limit in the global test: small, so that a few connections reach it.
const MEMORY_LIMIT: usize = 512 * 1024;
/// Connections pipelining behind the stall.
const PIPELINERS: usize = 12;
/// Requests each sends: 12 x 3,000 x ~60 bytes, about 4 times the limit.
const PIPELINED: usize = 3_000;

#[test]
fn past_the_memory_limit_reading_stops_and_every_request_is_answered_in_order() {
    let mut config = test_config();
    config.limits.memory_limit_bytes = MEMORY_LIMIT;
    let server = start_server_with(config);
    let mut staller = Client::negotiated(&server.addr);
    let mut probe = Client::negotiated(&server.addr);
    staller.send(r#"{"execute":"stall","id":"s"}"#);
    tests::wait_until_executor_busy(&mut probe);
    let mut clients: Vec<Client> =
        (0..PIPELINERS).map(|_| Client::negotiated(&server.addr)).collect();
    let senders: Vec<_> = clients
        .iter()
        .map(|client| {
            let mut writer = client.clone_writer();
            std::thread::spawn(move || {
                let requests: String = (0..PIPELINED)
                    .map(|i| {
                        format!(r#"{{"execute":"counter-add","arguments":{{"delta":1}},"id":{i}}}"#)
                    })
                    .collect();
                writer.send(&requests);
            })
        })
        .collect();
    // Reading stops for the connections over their share once the limit is reached (and for
    // every connection holding anything once past the limit's 1/16 slack); a connection
    // holding nothing (the probe) is still served out of band meanwhile. What two parser
    // threads may have read but not yet counted: one read buffer each.
    let one_read_per_thread = 2 * (16 * 1024 + 64);
    let bound = (MEMORY_LIMIT + MEMORY_LIMIT / 16 + one_read_per_thread) as u64;
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    loop {
        let memory = probe.request(r#"{"exec-oob":"query-stats"}"#)["return"]["memory"].clone();
        assert!(memory["peak"].as_u64().unwrap() <= bound, "over the limit: {memory}");
        if memory["held"].as_u64().unwrap() >= MEMORY_LIMIT as u64 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the limit was never reached: {memory}");
        std::thread::yield_now();
    }
    assert_eq!(probe.request(r#"{"exec-oob":"ping","id":"p"}"#), json!({"return":{},"id":"p"}));
    assert_eq!(
        probe.request(r#"{"exec-oob":"release","id":"r"}"#),
        json!({"return":{"released":1},"id":"r"})
    );
    assert_eq!(staller.recv(), json!({"return":{"released":true},"id":"s"}));
    let mut values = Vec::with_capacity(PIPELINERS * PIPELINED);
    for client in &mut clients {
        for i in 0..PIPELINED {
            let reply = client.recv();
            assert_eq!(reply["id"], i, "each request answered once, in order");
            values.push(reply["return"]["value"].as_i64().unwrap());
        }
    }
    for sender in senders {
        sender.join().unwrap();
    }
    values.sort_unstable();
    assert!(
        values == (1..=(PIPELINERS * PIPELINED) as i64).collect::<Vec<_>>(),
        "every add ran once"
    );
    let memory = probe.request(r#"{"exec-oob":"query-stats"}"#)["return"]["memory"].clone();
    assert!(memory["peak"].as_u64().unwrap() <= bound, "over the limit: {memory}");
}

/// Replies written in one turn can grow the write buffer past the budget, and its capacity
/// alone then keeps the connection over it: once they are written the buffer goes back, so
/// the connection is not left paused with nothing to send (which would stop it for good),
/// and it is served as before.
#[test]
fn a_write_buffer_grown_past_the_budget_is_given_back_once_written() {
    const REQUESTS: usize = 40;
    let mut config = test_config();
    config.limits.max_message_bytes = 16 * 1024;
    config.limits.conn_budget_bytes = BUDGET;
    let server = start_server_with(config);
    let mut probe = Client::negotiated(&server.addr);
    let mut client = Client::negotiated(&server.addr);
    let schemas: String =
        (0..REQUESTS).map(|i| format!(r#"{{"execute":"query-qmp-schema","id":{i}}}"#)).collect();
    client.send(&schemas);
    let mut bytes = 0;
    for i in 0..REQUESTS {
        let reply = client.recv();
        assert_eq!(reply["id"], i, "in order, each once");
        bytes += reply.to_string().len();
    }
    assert!(bytes > 2 * BUDGET, "the replies ({bytes} bytes) must be several budgets");
    for i in 0..3 {
        let id = format!("p{i}");
        let reply = client.request(&format!(r#"{{"execute":"ping","id":"{id}"}}"#));
        assert_eq!(reply, json!({"return":{},"id":id}));
    }
    let memory = probe.request(r#"{"exec-oob":"query-stats"}"#)["return"]["memory"].clone();
    assert_eq!(
        (memory["paused-own"].as_u64(), memory["paused-shared"].as_u64()),
        (Some(0), Some(0))
    );
}
