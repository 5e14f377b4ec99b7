//! Graceful shutdown: every request already read is answered, then `SHUTDOWN`, then the
//! connection closes; `quit` does the same from inside.

use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use tests::{Client, READ_TIMEOUT, start_server};

#[test]
fn shutdown_answers_everything_already_read_then_sends_shutdown() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    client.send(r#"{"execute":"stall","id":"s"}"#);
    for i in 0..100 {
        client.send(&format!(r#"{{"execute":"counter-add","arguments":{{"delta":1}},"id":{i}}}"#));
    }
    // Once this OOB reply is back, everything sent before it has been read.
    assert_eq!(
        client.request(r#"{"exec-oob":"ping","id":"read"}"#),
        json!({"return":{},"id":"read"})
    );
    let stopper = std::thread::spawn(move || server.shutdown());
    // The shutdown hook releases the stall; the queued adds all run and answer.
    assert_eq!(client.recv(), json!({"return":{"released":true},"id":"s"}));
    for i in 0..100 {
        assert_eq!(client.recv(), json!({"return":{"value": i + 1},"id": i}));
    }
    let event = client.recv();
    assert_eq!(event["event"], "SHUTDOWN");
    assert_eq!(event["data"], json!({"guest": false, "reason": "host-signal"}));
    client.expect_eof();
    stopper.join().unwrap();
}

#[test]
fn quit_replies_sends_shutdown_to_every_session_and_stops_the_server() {
    let mut server = start_server();
    let mut quitter = Client::negotiated(&server.addr);
    let mut bystander = Client::negotiated(&server.addr);
    quitter.send(
        r#"{"execute":"counter-add","arguments":{"delta":1},"id":1}{"execute":"quit","id":2}"#,
    );
    assert_eq!(quitter.recv(), json!({"return":{"value":1},"id":1}));
    assert_eq!(quitter.recv(), json!({"return":{},"id":2}));
    let reason = json!({"guest": false, "reason": "host-qmp-quit"});
    assert_eq!(quitter.recv()["data"], reason);
    assert_eq!(bystander.recv()["data"], reason);
    quitter.expect_eof();
    bystander.expect_eof();
    let handle = server.handle.take().unwrap();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        handle.wait();
        done.send(()).unwrap();
    });
    let waited = finished.recv_timeout(READ_TIMEOUT + Duration::from_secs(5));
    assert!(waited.is_ok(), "the server stopped by itself after quit");
}

#[test]
fn a_stall_queued_behind_quit_is_released_and_answered_so_the_exit_is_prompt() {
    let mut server = start_server();
    let mut client = Client::negotiated(&server.addr);
    client.send(
        r#"{"execute":"quit","id":1}{"execute":"stall","arguments":{"timeout-ms":60000},"id":2}"#,
    );
    assert_eq!(client.recv(), json!({"return":{},"id":1}));
    assert_eq!(client.recv()["event"], "SHUTDOWN");
    // The shutdown hook ran on the executor: the stall read before the drain ends at once.
    assert_eq!(client.recv(), json!({"return":{"released":true},"id":2}));
    client.expect_eof();
    let handle = server.handle.take().unwrap();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        handle.wait();
        done.send(()).unwrap();
    });
    assert!(finished.recv_timeout(READ_TIMEOUT).is_ok(), "exit not held by the stall");
}
