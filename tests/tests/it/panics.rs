//! A handler that panics costs its own request one error reply; the thread that ran it (the
//! executor or a parser thread) survives, later requests are answered, shutdown completes.

use std::sync::Arc;

use ooblane::{Empty, NoArgs, Registry};
use serde_json::json;
use tests::{Client, TestServer, generic_error, test_config};

fn server_with_panicking_commands() -> TestServer {
    let mut registry = Registry::new(0u64, Arc::new(()));
    registry
        .inband("boom", |_, _: NoArgs| -> Result<Empty, _> { panic!("in-band boom") })
        .allow_oob("oob-boom", |_, _: NoArgs| -> Result<Empty, _> { panic!("oob boom") })
        .inband("count", |exec, _: NoArgs| {
            *exec.state() += 1;
            Ok(json!({"count": *exec.state()}))
        });
    let handle = ooblane::Server::start(test_config(), registry).expect("server starts");
    let addr = handle.qmp_addrs()[0].clone();
    TestServer { handle: Some(handle), addr, metrics: None }
}

#[test]
fn a_panicking_handler_gets_an_error_reply_and_the_server_goes_on() {
    let server = server_with_panicking_commands();
    let mut client = Client::negotiated(&server.addr);
    client.send(r#"{"execute":"count","id":1}{"execute":"boom","id":2}{"execute":"count","id":3}"#);
    assert_eq!(client.recv(), json!({"return": {"count": 1}, "id": 1}));
    let desc = "the command failed internally (panic: in-band boom)";
    assert_eq!(client.recv(), generic_error(desc, Some(json!(2))));
    assert_eq!(client.recv(), json!({"return": {"count": 2}, "id": 3}));
    let desc = "the command failed internally (panic: oob boom)";
    assert_eq!(
        client.request(r#"{"exec-oob":"oob-boom","id":4}"#),
        generic_error(desc, Some(json!(4)))
    );
    assert_eq!(
        client.request(r#"{"execute":"count","id":5}"#),
        json!({"return": {"count": 3}, "id": 5})
    );
    drop(client);
    server.shutdown();
}
