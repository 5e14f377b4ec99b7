//! Greeting and capabilities negotiation (docs/protocol.md#negotiation).

use serde_json::json;
use tests::{Client, error, generic_error, start_server};

#[test]
fn greeting_is_exact() {
    let server = start_server();
    let mut client = Client::connect(&server.addr);
    let line = client.recv_line();
    assert_eq!(
        line,
        r#"{"QMP":{"version":{"qemu":{"micro":0,"minor":1,"major":0},"package":"ooblane 0.1.0"},"capabilities":["oob"]}}"#
    );
}

#[test]
fn commands_before_negotiation_are_refused_then_negotiation_succeeds() {
    let server = start_server();
    let mut client = Client::connect(&server.addr);
    client.recv();
    let expecting = "Expecting capabilities negotiation with 'qmp_capabilities'";
    assert_eq!(
        client.request(r#"{"execute":"query-version","id":1}"#),
        error("CommandNotFound", expecting, Some(json!(1)))
    );
    assert_eq!(
        client.request(r#"{"execute":"nonexistent","id":2}"#),
        error("CommandNotFound", expecting, Some(json!(2)))
    );
    assert_eq!(
        client.request(r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":3}"#),
        json!({"return": {}, "id": 3})
    );
    let version = client.request(r#"{"execute":"query-version","id":4}"#);
    assert_eq!(version["return"]["package"], "ooblane 0.1.0");
    assert_eq!(version["id"], 4);
}

#[test]
fn a_second_negotiation_is_command_not_found() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    assert_eq!(
        client.request(r#"{"execute":"qmp_capabilities","id":"again"}"#),
        error(
            "CommandNotFound",
            "Capabilities negotiation is already complete, command ignored",
            Some(json!("again"))
        )
    );
}

#[test]
fn an_unknown_capability_is_refused_and_the_session_stays_in_negotiation() {
    let server = start_server();
    let mut client = Client::connect(&server.addr);
    client.recv();
    assert_eq!(
        client.request(r#"{"execute":"qmp_capabilities","arguments":{"enable":["bogus"]},"id":1}"#),
        generic_error("Parameter 'enable' does not accept value 'bogus'", Some(json!(1)))
    );
    assert_eq!(
        client.request(r#"{"execute":"ping","id":2}"#),
        error(
            "CommandNotFound",
            "Expecting capabilities negotiation with 'qmp_capabilities'",
            Some(json!(2))
        )
    );
    assert_eq!(client.request(r#"{"execute":"qmp_capabilities"}"#), json!({"return": {}}));
}

#[test]
fn without_oob_negotiated_exec_oob_is_an_unexpected_member() {
    let server = start_server();
    let mut client = Client::connect(&server.addr);
    client.recv();
    client.request(r#"{"execute":"qmp_capabilities"}"#);
    assert_eq!(
        client.request(r#"{"exec-oob":"ping","id":1}"#),
        generic_error("QMP input member 'exec-oob' is unexpected", Some(json!(1)))
    );
    assert_eq!(client.request(r#"{"execute":"ping","id":2}"#), json!({"return": {}, "id": 2}));
}

#[test]
fn events_reach_negotiated_sessions_only_with_timestamps() {
    let server = start_server();
    let mut waiting = Client::connect(&server.addr);
    waiting.recv();
    let mut emitter = Client::negotiated(&server.addr);
    let mut listener = Client::negotiated(&server.addr);
    emitter.send(r#"{"execute":"emit-event","arguments":{"event":"HELLO","data":{"n":1}},"id":1}"#);
    let event = emitter.recv();
    assert_eq!(emitter.recv(), json!({"return": {}, "id": 1}), "event first, then the reply");
    assert_eq!(event["event"], "HELLO");
    assert_eq!(event["data"], json!({"n": 1}));
    assert!(event["timestamp"]["seconds"].as_u64().unwrap() > 1_600_000_000);
    assert!(event["timestamp"]["microseconds"].as_u64().unwrap() < 1_000_000);
    assert_eq!(listener.recv()["event"], "HELLO");
    // The session still negotiating got nothing: its next line is its own reply.
    assert_eq!(waiting.request(r#"{"execute":"qmp_capabilities"}"#), json!({"return": {}}));
}

#[test]
fn query_commands_lists_every_command_with_its_lane() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    let reply = client.request(r#"{"execute":"query-commands"}"#);
    let oob: Vec<&str> = reply["return"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["allow-oob"] == true)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(oob, vec!["ping", "query-cluster", "query-counter", "query-stats", "release"]);
    assert_eq!(reply["return"].as_array().unwrap().len(), 16);
}
