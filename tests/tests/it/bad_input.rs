//! Bad input (docs/protocol.md#bad-input): each bad message gets exactly one `GenericError` without
//! id, in order, and the connection survives. After each case a final `ping` proves that no further
//! reply is pending (no cascade) and that the stream resynchronised.

use serde_json::{Value, json};
use tests::{Client, generic_error, start_server, start_server_with, test_config};

/// Sends `bad` then a ping, expects one error matching `desc_prefix`, then the ping's reply.
fn one_error(client: &mut Client, bad: &[u8], desc_prefix: &str) {
    client.send_bytes(bad);
    client.send(r#"{"execute":"ping","id":"after"}"#);
    let reply = client.recv();
    assert_eq!(reply["error"]["class"], "GenericError", "{reply} for {bad:?}");
    let desc = reply["error"]["desc"].as_str().unwrap();
    assert!(desc.starts_with(desc_prefix), "{desc:?} for {bad:?}");
    assert!(reply.get("id").is_none(), "{reply}");
    assert_eq!(reply.as_object().unwrap().len(), 1, "{reply}");
    assert_eq!(client.recv(), json!({"return": {}, "id": "after"}), "for {bad:?}");
}

#[test]
fn malformed_json_of_every_kind_gives_one_error_each() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    let cases: [&[u8]; 8] = [
        br#"{"execute":}"#,
        br#"{"execute" "ping"}"#,
        br#"{"execute":"ping",}"#,
        b"abc ",
        b"}",
        b"]",
        b"\x01 ",
        b"{'execute':'ping'}",
    ];
    for bad in cases {
        one_error(&mut client, bad, "JSON parse error");
    }
}

#[test]
fn invalid_utf8_and_raw_control_characters_in_strings_are_rejected() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    one_error(
        &mut client,
        b"{\"execute\":\"pi\xffng\",\"id\":1}",
        "JSON parse error, invalid UTF-8",
    );
    one_error(&mut client, b"{\"execute\":\"pi\x01ng\",\"id\":1}", "JSON parse error");
}

#[test]
fn non_objects_are_rejected() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    for bad in [&b"[1,2]"[..], b"[]", b"\"str\"", b"123 ", b"null ", b"true "] {
        one_error(&mut client, bad, "QMP input must be a JSON object");
    }
}

#[test]
fn duplicate_keys_anywhere_are_rejected_and_never_run() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    one_error(
        &mut client,
        br#"{"execute":"counter-add","execute":"counter-add","arguments":{"delta":1}}"#,
        "JSON parse error, duplicate key 'execute'",
    );
    one_error(
        &mut client,
        br#"{"execute":"counter-add","arguments":{"delta":1,"delta":2},"id":1}"#,
        "JSON parse error, duplicate key 'delta'",
    );
    assert_eq!(
        client.request(r#"{"exec-oob":"query-counter"}"#),
        json!({"return": {"value": 0}}),
        "neither ambiguous request ran"
    );
}

#[test]
fn unknown_members_and_bad_member_types_carry_the_id() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    let cases = [
        (r#"{"execute":"ping","foo":1,"id":1}"#, "QMP input member 'foo' is unexpected"),
        (
            r#"{"execute":"ping","arguments":[],"id":1}"#,
            "QMP input member 'arguments' must be an object",
        ),
        (r#"{"execute":["ping"],"id":1}"#, "QMP input member 'execute' must be a string"),
    ];
    for (bad, desc) in cases {
        assert_eq!(client.request(bad), generic_error(desc, Some(json!(1))), "{bad}");
    }
}

#[test]
fn nesting_deeper_than_1024_is_rejected_and_1024_is_parsed() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    // The request object is level 1, `arguments` level 2, so 1022 arrays reach 1024.
    let deep = |arrays: usize| {
        format!(
            r#"{{"execute":"ping","arguments":{{"a":{}{}}},"id":1}}"#,
            "[".repeat(arrays),
            "]".repeat(arrays)
        )
    };
    assert_eq!(
        client.request(&deep(1022)),
        generic_error("Parameter 'a' is unexpected", Some(json!(1))),
        "1024 levels parse; the argument is then refused by the command"
    );
    one_error(&mut client, deep(1023).as_bytes(), "JSON parse error, nesting too deep");
    let very_deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    one_error(&mut client, very_deep.as_bytes(), "JSON parse error, nesting too deep");
}

#[test]
fn a_message_over_the_size_limit_gives_one_error_and_memory_stays_bounded() {
    let mut config = test_config();
    config.limits.max_message_bytes = 1024;
    config.limits.conn_budget_bytes = 64 * 1024;
    let server = start_server_with(config);
    let mut client = Client::negotiated(&server.addr);
    let huge =
        format!(r#"{{"execute":"ping","arguments":{{"pad":"{}"}},"id":1}}"#, "x".repeat(1 << 20));
    one_error(&mut client, huge.as_bytes(), "JSON parse error, message exceeds 1024 bytes");
    let fits =
        format!(r#"{{"execute":"ping","arguments":{{"pad":"{}"}},"id":2}}"#, "x".repeat(900));
    let reply: Value = client.request(&fits);
    assert_eq!(reply, generic_error("Parameter 'pad' is unexpected", Some(json!(2))));
}

#[test]
fn requests_split_across_writes_and_many_per_write_are_framed() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    let text = r#"{"execute":"ping","id":"a"}{"execute":"ping","id":"b"}"#;
    for byte in text.as_bytes() {
        client.send_bytes(&[*byte]);
    }
    assert_eq!(
        client.recv_n(2),
        vec![json!({"return":{},"id":"a"}), json!({"return":{},"id":"b"})]
    );
    client.send("{\"execute\":\"ping\",\"id\":1}\r\n{\"execute\":\"ping\",\"id\":2}\n");
    assert_eq!(client.recv_n(2), vec![json!({"return":{},"id":1}), json!({"return":{},"id":2})]);
}

#[test]
fn a_0xff_byte_inside_an_unfinished_request_costs_only_that_request() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    client.send_bytes(b"{\"execute\":\"ping\",\xff{\"execute\":\"ping\",\"id\":1}\r\n");
    let error = client.recv();
    assert_eq!(error["error"]["class"], "GenericError");
    assert!(error.get("id").is_none(), "{error}");
    assert_eq!(client.recv(), json!({"return": {}, "id": 1}));
}

#[test]
fn an_unterminated_string_costs_only_its_line() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    client.send("{\"execute\":\"ping\",\"id\":\"oops\r\n{\"execute\":\"ping\",\"id\":2}\r\n");
    let error = client.recv();
    assert_eq!(error["error"]["class"], "GenericError");
    assert!(error.get("id").is_none(), "{error}");
    assert_eq!(client.recv(), json!({"return": {}, "id": 2}), "the next line was not swallowed");
}
