//! The `id` is echoed from its original bytes (compacted to one line) on every reply to an
//! object, errors included; replies to input that is not a parsable object carry none.

use serde_json::json;
use tests::{Client, generic_error, start_server};

#[test]
fn ids_of_every_json_kind_are_echoed_byte_for_byte() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    let cases = [
        ("\"s\"", "\"s\""),
        ("\"\"", "\"\""),
        ("42", "42"),
        ("-7", "-7"),
        ("1.50", "1.50"),
        ("1e3", "1e3"),
        ("12345678901234567890", "12345678901234567890"),
        ("99999999999999999999", "99999999999999999999"),
        ("-9223372036854775809", "-9223372036854775809"),
        ("null", "null"),
        ("true", "true"),
        ("[1,\"two\",{\"x\":null}]", "[1,\"two\",{\"x\":null}]"),
        (
            "{\"a\" : [1, {\"b\": null}] ,\r\n \"c\":\"d e\"}",
            "{\"a\":[1,{\"b\":null}],\"c\":\"d e\"}",
        ),
        ("\"a\\\"b\\\\c\\u00e9\\n\"", "\"a\\\"b\\\\c\\u00e9\\n\""),
    ];
    for (sent, echoed) in cases {
        client.send(&format!("{{\"execute\":\"ping\",\"id\":{sent}}}"));
        assert_eq!(client.recv_line(), format!("{{\"return\":{{}},\"id\":{echoed}}}"), "{sent}");
        client.send(&format!("{{\"id\":{sent},\"exec-oob\":\"ping\"}}"));
        assert_eq!(
            client.recv_line(),
            format!("{{\"return\":{{}},\"id\":{echoed}}}"),
            "oob {sent}"
        );
    }
}

#[test]
fn an_id_key_written_with_escapes_is_still_echoed() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    let reply = client.request(r#"{"execute":"ping","\u0069d":{"k":[1]}}"#);
    assert_eq!(reply, json!({"return": {}, "id": {"k": [1]}}));
}

#[test]
fn errors_to_objects_carry_the_id_and_errors_to_non_objects_do_not() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    assert_eq!(
        client.request(r#"{"execute":"nope","id":["x"]}"#),
        tests::error("CommandNotFound", "The command nope has not been found", Some(json!(["x"])))
    );
    assert_eq!(
        client.request(r#"{"execute":"work","arguments":{"us":"x"},"id":5}"#),
        generic_error("Invalid parameter type, expected: unsigned integer", Some(json!(5)))
    );
    assert_eq!(
        client.request(r#"{"execute":"work","id":6}"#),
        generic_error("Parameter 'us' is missing", Some(json!(6)))
    );
    assert_eq!(
        client.request(r#"{"execute":"ping","arguments":{"x":1},"id":7}"#),
        generic_error("Parameter 'x' is unexpected", Some(json!(7)))
    );
    assert_eq!(
        client.request(r#"{"id":8}"#),
        generic_error("QMP input lacks member 'execute'", Some(json!(8)))
    );
    assert_eq!(
        client.request(r#"[{"id":9}]"#),
        generic_error("QMP input must be a JSON object", None)
    );
    let malformed = client.request(r#"{"execute":"ping","id":10,}"#);
    assert!(malformed.get("id").is_none(), "{malformed}");
    assert_eq!(malformed["error"]["class"], "GenericError");
}
