//! Timeouts that do not break real clients: an unfinished capabilities negotiation and a
//! message left incomplete end the connection with one error and a clean end of stream; an
//! idle connection with nothing buffered is never timed out.

use std::time::Duration;

use serde_json::json;
use tests::{Client, generic_error, start_jsonrpc_server_with, start_server_with, test_config};

/// Short enough for CI, long enough that a client on a loaded machine negotiates in time.
const TIMEOUT: Duration = Duration::from_millis(300);

fn server_with_timeouts() -> tests::TestServer {
    let mut config = test_config();
    config.limits.negotiation_timeout = TIMEOUT;
    config.limits.incomplete_timeout = TIMEOUT;
    start_server_with(config)
}

#[test]
fn a_qmp_client_that_never_negotiates_gets_one_error_then_end_of_stream() {
    let server = server_with_timeouts();
    let mut client = Client::connect(&server.addr);
    assert!(client.recv()["QMP"].is_object(), "greeting");
    assert_eq!(
        client.recv(),
        generic_error("capabilities negotiation not finished within 300ms", None)
    );
    client.expect_eof();
}

#[test]
fn a_message_left_incomplete_gets_one_error_then_end_of_stream() {
    let server = server_with_timeouts();
    let mut client = Client::negotiated(&server.addr);
    client.send(r#"{"execute":"counter-add","arguments":{"delta":1},"id":1}{"execute":"pi"#);
    assert_eq!(client.recv(), json!({"return":{"value":1},"id":1}));
    assert_eq!(client.recv(), generic_error("message incomplete for 300ms", None));
    client.expect_eof();
}

#[test]
fn trickling_a_message_does_not_extend_its_deadline() {
    let server = server_with_timeouts();
    let mut client = Client::negotiated(&server.addr);
    let message =
        r#"{"execute":"ping","arguments":{},"id":"slow","padding":"xxxxxxxxxxxxxxxxxxxx"}"#;
    let started = std::time::Instant::now();
    let mut sent = 0;
    // One byte every 30 ms: the whole message would take 2.4 s, far past the timeout.
    while started.elapsed() < TIMEOUT * 3 && sent < message.len() - 1 {
        client.send(&message[sent..=sent]);
        sent += 1;
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(client.recv(), generic_error("message incomplete for 300ms", None));
    client.expect_eof();
}

#[test]
fn a_json_rpc_message_left_incomplete_gets_an_error_with_null_id() {
    let mut config = test_config();
    config.limits.incomplete_timeout = TIMEOUT;
    let server = start_jsonrpc_server_with(config);
    let mut client = Client::jsonrpc(&server.addr);
    client.send(r#"{"id":1,"method":"ping","params":[]}{"id":2,"method""#);
    assert_eq!(client.recv(), json!({"id":1,"result":{},"error":null}));
    let error = client.recv();
    assert_eq!(
        error,
        json!({"id":null,"result":null,"error":{"error":"GenericError","details":"message incomplete for 300ms"}})
    );
    client.expect_eof();
}

#[test]
fn idle_connections_with_nothing_buffered_are_never_timed_out() {
    let mut config = test_config();
    config.limits.negotiation_timeout = TIMEOUT;
    config.limits.incomplete_timeout = TIMEOUT;
    config.jsonrpc = vec!["tcp:127.0.0.1:0".parse().unwrap()];
    let server = start_server_with(config);
    let rpc_addr = server.handle().jsonrpc_addrs()[0].clone();
    let mut qmp = Client::negotiated(&server.addr);
    let mut rpc = Client::jsonrpc(&rpc_addr);
    // The subject of the test: staying idle for several timeouts.
    std::thread::sleep(TIMEOUT * 4);
    assert_eq!(qmp.request(r#"{"execute":"ping","id":1}"#), json!({"return":{},"id":1}));
    assert_eq!(
        rpc.request(r#"{"id":1,"method":"ping","params":[]}"#),
        json!({"id":1,"result":{},"error":null})
    );
}
