//! The durable single node (`ooblane_raft::RaftLog`, `ooblane --data`): replicated commands
//! survive a restart (snapshot plus log replay), local in-band commands wait for the
//! replicated ones received before them, and `query-cluster` reports the log.

use std::path::PathBuf;

use ooblane::{Error, NoArgs, Registry, Server};
use ooblane_raft::{RaftConfig, RaftLog};
use serde_json::{Value, json};
use tests::{Client, TestServer, generic_error, start_replicated_with, start_server, test_config};

/// A fresh data directory, removed on drop.
struct DataDir(PathBuf);

impl DataDir {
    fn new(tag: &str) -> DataDir {
        let name = format!("engine-test-{}-{tag}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        DataDir(path)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn durable(dir: &DataDir, snapshot_every: u64) -> TestServer {
    let raft = RaftConfig { snapshot_every, ..RaftConfig::durable(&dir.0) };
    start_replicated_with(test_config(), RaftLog::new(raft))
}

fn add(id: u64) -> String {
    format!(r#"{{"execute":"counter-add","arguments":{{"delta":1}},"id":{id}}}"#)
}

#[test]
fn replicated_commands_survive_a_restart_and_local_ones_wait_their_turn() {
    let dir = DataDir::new("restart");
    let server = durable(&dir, 16);
    let mut client = Client::negotiated(&server.addr);
    // One at a time: one log entry each, so snapshots are taken (every 16 entries).
    for id in 0..40 {
        assert_eq!(client.request(&add(id)), json!({"return": {"value": id + 1}, "id": id}));
    }
    // Pipelined, then a local in-band command (an allow-oob command sent with `execute`):
    // it runs after the 160 replicated ones are applied and sees their effect.
    let mut burst: String = (40..200).map(add).collect();
    burst.push_str(r#"{"execute":"query-counter","id":"after"}"#);
    client.send(&burst);
    let replies = client.recv_n(161);
    for (k, reply) in replies[..160].iter().enumerate() {
        let id = 40 + k as u64;
        assert_eq!(reply, &json!({"return": {"value": id + 1}, "id": id}));
    }
    assert_eq!(replies[160], json!({"return": {"value": 200}, "id": "after"}));
    let status = client.request(r#"{"exec-oob":"query-cluster","id":"c"}"#);
    assert_eq!(status["return"]["id"], json!(1));
    assert_eq!(status["return"]["role"], json!("leader"));
    assert!(status["return"]["snapshot"].as_u64().is_some(), "a snapshot was taken: {status}");
    server.shutdown();
    assert!(dir.0.join("log.redb").is_file() && dir.0.join("snapshot").is_file());

    let server = durable(&dir, 16);
    let mut client = Client::negotiated(&server.addr);
    let counter = client.request(r#"{"execute":"query-counter","id":1}"#);
    assert_eq!(counter, json!({"return": {"value": 200}, "id": 1}), "restored, then replayed");
    assert_eq!(client.request(&add(2)), json!({"return": {"value": 201}, "id": 2}));
}

#[test]
fn durable_and_cluster_modes_need_a_snapshot_form() {
    let dir = DataDir::new("no-snapshots");
    let mut registry = Registry::new(0_u64, std::sync::Arc::new(()));
    registry.inband("bump", |exec, _: NoArgs| {
        *exec.state() += 1;
        Ok(*exec.state())
    });
    let log = RaftLog::new(RaftConfig::durable(&dir.0));
    match Server::start_replicated(test_config(), registry, log) {
        Err(Error::Config(why)) => assert!(why.contains("Registry::snapshots"), "{why}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn query_cluster_says_when_there_is_no_log() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    let reply: Value = client.request(r#"{"exec-oob":"query-cluster","id":7}"#);
    let desc = "this engine is not clustered (start it with --cluster or --data)";
    assert_eq!(reply, generic_error(desc, Some(json!(7))));
}
