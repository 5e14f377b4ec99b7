//! Unix-socket listeners: same dialect, same lanes; the socket file is removed on shutdown.

use serde_json::json;
use tests::{Client, start_server_with, temp_socket_path, test_config};

#[test]
fn unix_socket_serves_both_lanes_and_is_removed_on_shutdown() {
    let path = temp_socket_path("unix");
    let mut config = test_config();
    config.qmp = vec![ooblane::Address::Unix(path.clone())];
    let server = start_server_with(config);
    assert_eq!(server.handle().qmp_addrs(), &[ooblane::Address::Unix(path.clone())]);
    let mut client = Client::negotiated(&server.addr);
    client.send(r#"{"execute":"stall","id":"s"}{"execute":"ping","id":"in"}"#);
    assert_eq!(
        client.request(r#"{"exec-oob":"ping","id":"oob"}"#),
        json!({"return":{},"id":"oob"})
    );
    tests::wait_until_executor_busy(&mut client);
    client.send(r#"{"exec-oob":"release","id":"r"}"#);
    assert_eq!(
        client.recv_n(3),
        vec![
            json!({"return":{"released":1},"id":"r"}),
            json!({"return":{"released":true},"id":"s"}),
            json!({"return":{},"id":"in"}),
        ]
    );
    drop(client);
    server.shutdown();
    assert!(!path.exists(), "socket file removed");
}

#[test]
fn a_stale_socket_file_is_replaced_but_a_live_one_is_refused() {
    let path = temp_socket_path("stale");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves a stale file
    let mut config = test_config();
    config.qmp = vec![ooblane::Address::Unix(path.clone())];
    let server = start_server_with(config.clone());
    let err = ooblane::Server::start(config, ooblane::demo::registry()).unwrap_err();
    assert!(err.to_string().contains("cannot listen on unix:"), "{err}");
    let mut client = Client::negotiated(&server.addr);
    assert_eq!(client.request(r#"{"execute":"ping"}"#), json!({"return":{}}));
}
