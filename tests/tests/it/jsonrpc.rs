//! The JSON-RPC dialect (docs/protocol.md#json-rpc-dialect): OVS 1.0 replies, notifications, `echo`
//! and allow-oob methods on the parser thread, JSON-RPC 2.0 forms and codes, and OVS's
//! close-on-protocol-error.

use serde_json::json;
use tests::{Client, start_jsonrpc_server, start_server_with, temp_socket_path, test_config};

#[test]
fn ovs_requests_get_1_0_replies_with_both_members() {
    let server = start_jsonrpc_server();
    let mut client = Client::jsonrpc(&server.addr);
    client.send(r#"{"id":1,"method":"counter-add","params":[{"delta":2}]}"#);
    assert_eq!(client.recv_line(), r#"{"id":1,"result":{"value":2},"error":null}"#);
    client.send(r#"{"id":"p","method":"ping","params":[]}"#);
    assert_eq!(client.recv_line(), r#"{"id":"p","result":{},"error":null}"#);
    assert_eq!(
        client.request(r#"{"id":[3],"method":"nope","params":[]}"#),
        json!({"id":[3],"result":null,"error":{"error":"CommandNotFound","details":"The command nope has not been found"}})
    );
    assert_eq!(
        client.request(r#"{"id":4,"method":"work","params":[{}]}"#),
        json!({"id":4,"result":null,"error":{"error":"GenericError","details":"Parameter 'us' is missing"}})
    );
}

#[test]
fn notifications_run_in_order_and_are_never_answered() {
    let server = start_jsonrpc_server();
    let mut client = Client::jsonrpc(&server.addr);
    client.send(r#"{"method":"counter-add","params":[{"delta":1}],"id":null}"#);
    client.send(r#"{"method":"counter-add","params":[{"delta":10}]}"#);
    client.send(r#"{"method":"nope","params":[]}"#);
    assert_eq!(
        client.request(r#"{"id":1,"method":"counter-add","params":[{"delta":100}]}"#),
        json!({"id":1,"result":{"value":111},"error":null}),
        "both notifications ran before, and none was answered"
    );
}

#[test]
fn echo_and_allow_oob_methods_answer_while_the_executor_is_stalled() {
    let server = start_jsonrpc_server();
    let mut client = Client::jsonrpc(&server.addr);
    client.send(r#"{"id":"s","method":"stall","params":[{"timeout-ms":60000}]}"#);
    client.send(r#"{"id":"queued","method":"counter-add","params":[{"delta":1}]}"#);
    assert_eq!(
        client.request(r#"{"id":"echo","method":"echo","params":[]}"#),
        json!({"id":"echo","result":[],"error":null})
    );
    assert_eq!(
        client.request(r#"{"id":"e2","method":"echo","params":["x",{"y":1}]}"#),
        json!({"id":"e2","result":["x",{"y":1}],"error":null})
    );
    assert_eq!(
        client.request(r#"{"id":"p","method":"ping","params":[]}"#),
        json!({"id":"p","result":{},"error":null})
    );
    loop {
        let stats = client.request(r#"{"id":"busy?","method":"query-stats","params":[]}"#);
        if !stats["result"]["executor"]["busy-for-us"].is_null() {
            break;
        }
    }
    assert_eq!(
        client.request(r#"{"id":"r","method":"release","params":[]}"#),
        json!({"id":"r","result":{"released":1},"error":null})
    );
    assert_eq!(client.recv(), json!({"id":"s","result":{"released":true},"error":null}));
    assert_eq!(client.recv(), json!({"id":"queued","result":{"value":1},"error":null}));
}

#[test]
fn json_rpc_2_0_requests_get_2_0_replies_and_standard_codes() {
    let server = start_jsonrpc_server();
    let mut client = Client::jsonrpc(&server.addr);
    assert_eq!(
        client.request(r#"{"jsonrpc":"2.0","method":"counter-add","params":{"delta":1},"id":"a"}"#),
        json!({"jsonrpc":"2.0","id":"a","result":{"value":1}})
    );
    assert_eq!(
        client
            .request(r#"{"jsonrpc":"2.0","method":"counter-add","params":[{"delta":1}],"id":"b"}"#),
        json!({"jsonrpc":"2.0","id":"b","result":{"value":2}})
    );
    let code = |client: &mut Client, request: &str| {
        let reply = client.request(request);
        assert_eq!(reply["jsonrpc"], "2.0", "{reply}");
        reply["error"]["code"].as_i64().unwrap()
    };
    assert_eq!(code(&mut client, r#"{"jsonrpc":"2.0","method":"nope","id":1}"#), -32601);
    assert_eq!(
        code(&mut client, r#"{"jsonrpc":"2.0","method":"work","params":{"us":"x"},"id":2}"#),
        -32602
    );
    assert_eq!(code(&mut client, r#"{"jsonrpc":"2.0","method":"work","params":5,"id":3}"#), -32602);
    assert_eq!(code(&mut client, r#"{"jsonrpc":"2.0","params":[],"id":4}"#), -32600);
    assert_eq!(code(&mut client, r#"{"jsonrpc":"2.0","method":"ping","bogus":1,"id":5}"#), -32600);
    let batch = client.request(r#"[{"jsonrpc":"2.0","method":"ping","id":6}]"#);
    assert_eq!(
        batch,
        json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid request: batch requests are not supported"}})
    );
    assert_eq!(
        client.request(r#"{"jsonrpc":"2.0","method":"ping","id":7}"#),
        json!({"jsonrpc":"2.0","id":7,"result":{}}),
        "the connection survives invalid requests"
    );
}

#[test]
fn a_protocol_error_gets_one_reply_then_the_connection_closes() {
    let server = start_jsonrpc_server();
    let mut broken = Client::jsonrpc(&server.addr);
    let mut other = Client::jsonrpc(&server.addr);
    broken.send(r#"{"id":1,"method":"ping","params":[]}{"id":2,"method":}{"id":3,"method":"ping","params":[]}"#);
    assert_eq!(broken.recv(), json!({"id":1,"result":{},"error":null}));
    let error = broken.recv();
    assert_eq!(error["id"], json!(null));
    assert_eq!(error["result"], json!(null));
    assert_eq!(error["error"]["error"], "GenericError");
    assert!(error["error"]["details"].as_str().unwrap().starts_with("JSON parse error"));
    broken.expect_eof();
    assert_eq!(
        other.request(r#"{"id":1,"method":"ping","params":[]}"#),
        json!({"id":1,"result":{},"error":null})
    );
}

#[test]
fn qmp_and_json_rpc_listeners_share_one_executor_and_order() {
    let path = temp_socket_path("rpc");
    let mut config = test_config();
    config.jsonrpc = vec![ooblane::Address::Unix(path.clone())];
    let server = start_server_with(config);
    assert_eq!(server.handle().jsonrpc_addrs(), &[ooblane::Address::Unix(path.clone())]);
    let mut qmp = Client::negotiated(&server.addr);
    let mut rpc = Client::jsonrpc(&ooblane::Address::Unix(path));
    assert_eq!(
        qmp.request(r#"{"execute":"counter-add","arguments":{"delta":1}}"#),
        json!({"return":{"value":1}})
    );
    assert_eq!(
        rpc.request(r#"{"id":1,"method":"counter-add","params":[{"delta":1}]}"#),
        json!({"id":1,"result":{"value":2},"error":null})
    );
    qmp.send(r#"{"execute":"emit-event","arguments":{"event":"X"}}"#);
    assert_eq!(qmp.recv()["event"], "X");
    assert_eq!(qmp.recv(), json!({"return":{}}));
    assert_eq!(
        rpc.request(r#"{"id":2,"method":"ping","params":[]}"#),
        json!({"id":2,"result":{},"error":null}),
        "JSON-RPC sessions get no QMP events"
    );
}
