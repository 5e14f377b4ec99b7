//! The `engine` binary as a user runs it: prints its address, serves, and on SIGTERM answers
//! what it has read, sends `SHUTDOWN` and exits 0.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;
use tests::Client;

/// `target/<profile>/engine`, next to this test binary's `deps/` folder.
fn engine_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join("engine");
    assert!(
        path.exists(),
        "{} missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

#[test]
fn sigterm_drains_sends_shutdown_and_exits_zero() {
    let mut child = Command::new(engine_binary())
        .args(["--qmp", "tcp:127.0.0.1:0", "--threads", "1", "--no-pin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("QMP listening on ").expect(&line).parse().unwrap();
    let mut client = Client::negotiated(&addr);
    client.send(
        r#"{"execute":"stall","id":"s"}{"execute":"counter-add","arguments":{"delta":2},"id":"c"}"#,
    );
    assert_eq!(client.request(r#"{"exec-oob":"ping","id":"p"}"#), json!({"return":{},"id":"p"}));
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(client.recv(), json!({"return":{"released":true},"id":"s"}));
    assert_eq!(client.recv(), json!({"return":{"value":2},"id":"c"}));
    assert_eq!(client.recv()["data"], json!({"guest": false, "reason": "host-signal"}));
    client.expect_eof();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
