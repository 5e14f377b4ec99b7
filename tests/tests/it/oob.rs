//! The out-of-band lane: `exec-oob` commands are answered by the parser thread whatever the
//! executor is doing (QEMU's `test_qmp_oob` scenario and its variants).

use serde_json::json;
use tests::{Client, error, generic_error, start_server};

#[test]
fn oob_overtakes_a_stalled_executor_then_in_band_replies_follow_in_order() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    client.send(r#"{"execute":"stall","arguments":{"timeout-ms":60000},"id":"stall"}"#);
    client.send(r#"{"execute":"counter-add","arguments":{"delta":5},"id":"in-band"}"#);
    client.send(r#"{"exec-oob":"ping","id":"oob-ping"}"#);
    assert_eq!(client.recv(), json!({"return": {}, "id": "oob-ping"}));
    assert_eq!(
        client.request(r#"{"exec-oob":"query-counter","id":"peek"}"#),
        json!({"return": {"value": 0}, "id": "peek"}),
        "the in-band add has not run: the executor is stalled"
    );
    tests::wait_until_executor_busy(&mut client);
    client.send(r#"{"exec-oob":"release","id":"release"}"#);
    assert_eq!(
        client.recv_n(3),
        vec![
            json!({"return": {"released": 1}, "id": "release"}),
            json!({"return": {"released": true}, "id": "stall"}),
            json!({"return": {"value": 5}, "id": "in-band"}),
        ]
    );
}

#[test]
fn oob_overtakes_a_saturated_executor() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    let mut burst = String::new();
    for i in 0..200 {
        burst.push_str(&format!(r#"{{"execute":"work","arguments":{{"us":1000}},"id":{i}}}"#));
    }
    burst.push_str(r#"{"exec-oob":"ping","id":"oob"}"#);
    client.send(&burst);
    // 200 ms of queued work: the OOB reply cannot be last, and in-band order holds.
    let replies = client.recv_n(201);
    let oob_at = replies.iter().position(|r| r["id"] == "oob").unwrap();
    assert!(oob_at < 200, "OOB ping answered only after all the work");
    let in_band: Vec<u64> = replies.iter().filter_map(|r| r["id"].as_u64()).collect();
    assert_eq!(in_band, (0..200).collect::<Vec<u64>>());
}

#[test]
fn a_malformed_request_queued_behind_a_stall_is_answered_in_order() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    client.send(r#"{"execute":"stall","id":1}{"execute":}{"execute":"nope","id":3}"#);
    tests::wait_until_executor_busy(&mut client);
    client.send(r#"{"exec-oob":"release","id":"r"}"#);
    let replies = client.recv_n(4);
    assert_eq!(replies[0], json!({"return": {"released": 1}, "id": "r"}));
    assert_eq!(replies[1], json!({"return": {"released": true}, "id": 1}));
    assert_eq!(replies[2]["error"]["class"], "GenericError");
    assert!(replies[2].get("id").is_none());
    assert_eq!(
        replies[3],
        error("CommandNotFound", "The command nope has not been found", Some(json!(3)))
    );
}

#[test]
fn oob_misuse_is_answered_at_once_even_while_stalled() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    client.send(r#"{"execute":"stall","id":"s"}"#);
    assert_eq!(
        client.request(r#"{"exec-oob":"work","arguments":{"us":1},"id":1}"#),
        generic_error("The command work does not support OOB", Some(json!(1)))
    );
    assert_eq!(
        client.request(r#"{"exec-oob":"nope","id":2}"#),
        error("CommandNotFound", "The command nope has not been found", Some(json!(2)))
    );
    assert_eq!(
        client.request(r#"{"exec-oob":"ping","arguments":{"x":1},"id":3}"#),
        generic_error("Parameter 'x' is unexpected", Some(json!(3)))
    );
    assert_eq!(client.request(r#"{"exec-oob":"ping"}"#), json!({"return": {}}));
    // Both members: a clash, answered in-band (after the stall).
    client.send(r#"{"execute":"ping","exec-oob":"ping","id":4}"#);
    tests::wait_until_executor_busy(&mut client);
    client.send(r#"{"exec-oob":"release","id":"r"}"#);
    assert_eq!(
        client.recv_n(3),
        vec![
            json!({"return": {"released": 1}, "id": "r"}),
            json!({"return": {"released": true}, "id": "s"}),
            generic_error("QMP input member 'execute' clashes with 'exec-oob'", Some(json!(4))),
        ]
    );
}

#[test]
fn an_allow_oob_command_sent_with_execute_runs_in_band_in_order() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    // `release` queued behind the stall cannot release it: the stall times out first.
    client.send(r#"{"execute":"stall","arguments":{"timeout-ms":100},"id":1}"#);
    client.send(r#"{"execute":"release","id":2}"#);
    assert_eq!(
        client.recv_n(2),
        vec![
            json!({"return": {"released": false}, "id": 1}),
            json!({"return": {"released": 0}, "id": 2}),
        ]
    );
}

#[test]
fn oob_from_another_connection_runs_while_one_connection_stalls_the_executor() {
    let server = start_server();
    let mut staller = Client::negotiated(&server.addr);
    let mut other = Client::negotiated(&server.addr);
    staller.send(r#"{"execute":"stall","id":"s"}"#);
    tests::wait_until_executor_busy(&mut staller);
    other.send(r#"{"execute":"counter-add","arguments":{"delta":1},"id":"queued"}"#);
    let stats = other.request(r#"{"exec-oob":"query-stats","id":"stats"}"#);
    assert_eq!(stats["id"], "stats");
    assert_eq!(stats["return"]["connections"]["open"], 2);
    assert_eq!(other.request(r#"{"exec-oob":"release"}"#), json!({"return": {"released": 1}}));
    assert_eq!(staller.recv(), json!({"return": {"released": true}, "id": "s"}));
    assert_eq!(other.recv(), json!({"return": {"value": 1}, "id": "queued"}));
}
