//! The `ooblane` binary as a user runs it: prints its address, serves, and on SIGTERM answers
//! what it has read, sends `SHUTDOWN` and exits 0. Lives in the engine package so that Cargo
//! builds the binary for it (`CARGO_BIN_EXE_ooblane`); the socket-level suite is in `tests/`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// Every read waits at most this long.
const TIMEOUT: Duration = Duration::from_secs(20);

struct Client {
    stream: TcpStream,
    lines: BufReader<TcpStream>,
}

impl Client {
    fn recv(&mut self) -> Value {
        let mut line = String::new();
        self.lines.read_line(&mut line).expect("a reply within the timeout");
        assert!(line.ends_with("\r\n"), "{line:?}");
        serde_json::from_str(&line).expect("a JSON line")
    }

    fn send(&mut self, raw: &str) {
        self.stream.write_all(raw.as_bytes()).expect("send");
    }

    fn eof(&mut self) -> bool {
        let mut line = String::new();
        self.lines.read_line(&mut line).expect("end of stream within the timeout") == 0
    }
}

#[test]
fn sigterm_drains_sends_shutdown_and_exits_zero() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ooblane"))
        .args(["--qmp", "tcp:127.0.0.1:0", "--threads", "1", "--no-pin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("engine starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("address line");
    let addr = line.trim().strip_prefix("QMP listening on tcp:").expect(&line).to_owned();
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut client = Client { lines: BufReader::new(stream.try_clone().expect("clone")), stream };
    assert_eq!(client.recv()["QMP"]["capabilities"], json!(["oob"]));
    client.send(r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#);
    assert_eq!(client.recv(), json!({"return": {}}));
    client.send(
        r#"{"execute":"stall","id":"s"}{"execute":"counter-add","arguments":{"delta":2},"id":"c"}"#,
    );
    client.send(r#"{"exec-oob":"ping","id":"p"}"#);
    assert_eq!(client.recv(), json!({"return": {}, "id": "p"}), "everything before it was read");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(client.recv(), json!({"return": {"released": true}, "id": "s"}));
    assert_eq!(client.recv(), json!({"return": {"value": 2}, "id": "c"}));
    assert_eq!(client.recv()["data"], json!({"guest": false, "reason": "host-signal"}));
    assert!(client.eof(), "the connection closes after draining");
    assert_eq!(child.wait().expect("exit status").code(), Some(0));
}
