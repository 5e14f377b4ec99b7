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
