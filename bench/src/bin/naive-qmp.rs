//! The QMP server a Rust user would write first, for the results suite to measure the engine
//! against: tokio's multi-threaded runtime, one task per connection reading lines and parsing
//! each with `serde_json`, and one executor task that owns the state, fed by an `mpsc`
//! channel, answering each in-band request through a `oneshot`. `exec-oob` requests are
//! answered by the connection task at once.
//!
//! `tuned-qmp` is the same server tuned a little (an executor thread, readers that never wait
//! for replies, one coalesced write per connection); the suite keeps this one for its
//! history.
//!
//! It serves the demo commands the suite drives (`ping`, `counter-add`, `query-counter`,
//! `work`) plus the greeting and `qmp_capabilities`, and prints `QMP listening on tcp:ADDR`
//! like the engine. Not a conformant QMP server: no ordering rules beyond one request at a
//! time per connection, no bad-input handling beyond an error reply.
//!
//! ```text
//! naive-qmp [tcp:HOST:PORT]      (default tcp:127.0.0.1:4445)
//! ```

use bench::demo::run;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// An in-band request for the executor task.
type Job = (String, Value, oneshot::Sender<Value>);

#[tokio::main]
#[allow(
    clippy::print_stdout,
    reason = "the listening address on stdout is the interface scripts read"
)]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "tcp:127.0.0.1:4445".into());
    let addr = addr.strip_prefix("tcp:").unwrap_or(&addr).to_owned();
    let listener = TcpListener::bind(&addr).await?;
    println!("QMP listening on tcp:{}", listener.local_addr()?);
    let (jobs, queue) = mpsc::channel::<Job>(16 * 1024);
    tokio::spawn(executor(queue));
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(connection(stream, jobs.clone()));
    }
}

/// The one task that owns the state and runs in-band commands in order.
async fn executor(mut queue: mpsc::Receiver<Job>) {
    let mut counter: i64 = 0;
    while let Some((command, args, reply)) = queue.recv().await {
        let _ = reply.send(run(&command, &args, &mut counter).unwrap_or(Value::Null));
    }
}

/// Reads one request per line, answers each before reading the next.
async fn connection(stream: TcpStream, jobs: mpsc::Sender<Job>) {
    let (read, mut write) = stream.into_split();
    let greeting = json!({"QMP": {"version": {"qemu": {"micro": 0, "minor": 1, "major": 0},
        "package": "naive-qmp"}, "capabilities": ["oob"]}});
    if write.write_all(format!("{greeting}\r\n").as_bytes()).await.is_err() {
        return;
    }
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(request) = serde_json::from_str::<Value>(&line) else { continue };
        let reply = answer(&request, &jobs).await;
        if write.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn answer(request: &Value, jobs: &mpsc::Sender<Job>) -> Value {
    let id = request.get("id").cloned();
    let (command, oob) = match (request["execute"].as_str(), request["exec-oob"].as_str()) {
        (Some(c), None) => (c, false),
        (None, Some(c)) => (c, true),
        _ => {
            return with_id(json!({"error": {"class": "GenericError", "desc": "bad request"}}), id);
        }
    };
    let args = request.get("arguments").cloned().unwrap_or(json!({}));
    let value = if command == "qmp_capabilities" {
        json!({})
    } else if oob {
        run(command, &args, &mut 0).unwrap_or(Value::Null)
    } else {
        let (tx, rx) = oneshot::channel();
        if jobs.send((command.to_owned(), args, tx)).await.is_err() {
            return Value::Null;
        }
        rx.await.unwrap_or(Value::Null)
    };
    if value.is_null() {
        let desc = format!("The command {command} has not been found");
        return with_id(json!({"error": {"class": "CommandNotFound", "desc": desc}}), id);
    }
    with_id(json!({ "return": value }), id)
}

fn with_id(mut reply: Value, id: Option<Value>) -> Value {
    if let Some(id) = id {
        reply["id"] = id;
    }
    reply
}
