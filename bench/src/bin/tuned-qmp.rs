//! The QMP server a Rust user writes after tuning the first one (`naive-qmp`) a little, for
//! the results suite to measure the engine against: tokio's multi-threaded runtime, a task
//! per connection reading lines and parsing each with `serde_json`, an `mpsc` channel to
//! one executor thread that owns the state and runs in-band commands in order, and a
//! writer task per connection that encodes every reply queued for it and sends them in one
//! write. The reader never waits for a reply, so a pipelining client keeps it busy;
//! `exec-oob` requests are answered by the reader through the writer at once.
//!
//! It serves the demo commands the suite drives (`ping`, `counter-add`, `query-counter`,
//! `work`) plus the greeting and `qmp_capabilities`, and prints `QMP listening on tcp:ADDR`
//! like the engine. Not a conformant QMP server: in-band replies keep their order per
//! connection (one executor, FIFO channels), but there is no bad-input handling beyond an
//! error reply and no bound on queued replies beyond the channels'.
//!
//! ```text
//! tuned-qmp [tcp:HOST:PORT]      (default tcp:127.0.0.1:4446)
//! ```

use std::io::Write as _;

use bench::demo::run;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A reply on its way to a connection's writer: the result (or `None`: command not found)
/// and the request's id.
struct Reply {
    command: String,
    value: Option<Value>,
    id: Option<Value>,
}

/// An in-band request for the executor thread, with where its reply goes.
struct Job {
    command: String,
    args: Value,
    id: Option<Value>,
    reply: mpsc::UnboundedSender<Reply>,
}

/// In-band requests queued for the executor at most: a reader waits beyond it.
const QUEUE: usize = 16 * 1024;

#[tokio::main]
#[allow(
    clippy::print_stdout,
    reason = "the listening address on stdout is the interface scripts read"
)]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "tcp:127.0.0.1:4446".into());
    let addr = addr.strip_prefix("tcp:").unwrap_or(&addr).to_owned();
    let listener = TcpListener::bind(&addr).await?;
    println!("QMP listening on tcp:{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let (jobs, queue) = mpsc::channel::<Job>(QUEUE);
    std::thread::Builder::new().name("executor".into()).spawn(move || executor(queue))?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(connection(stream, jobs.clone()));
    }
}

/// The one thread that owns the state and runs in-band commands in order.
fn executor(mut queue: mpsc::Receiver<Job>) {
    let mut counter: i64 = 0;
    while let Some(job) = queue.blocking_recv() {
        let value = run(&job.command, &job.args, &mut counter);
        let _ = job.reply.send(Reply { command: job.command, value, id: job.id });
    }
}

/// Reads one request per line and routes it; never waits for a reply.
async fn connection(stream: TcpStream, jobs: mpsc::Sender<Job>) {
    let (read, write) = stream.into_split();
    let (replies, outbox) = mpsc::unbounded_channel::<Reply>();
    tokio::spawn(writer(write, outbox));
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(request) = serde_json::from_str::<Value>(&line) else { continue };
        let id = request.get("id").cloned();
        let (command, oob) = match (request["execute"].as_str(), request["exec-oob"].as_str()) {
            (Some(c), None) => (c.to_owned(), false),
            (None, Some(c)) => (c.to_owned(), true),
            _ => ("".to_owned(), true), // answered at once as not found
        };
        let args = request.get("arguments").cloned().unwrap_or(json!({}));
        if oob || command == "qmp_capabilities" {
            let value = run(&command, &args, &mut 0);
            if replies.send(Reply { command, value, id }).is_err() {
                return;
            }
        } else if jobs.send(Job { command, args, id, reply: replies.clone() }).await.is_err() {
            return;
        }
    }
}

/// Writes the greeting, then every reply queued for the connection, encoded into one
/// buffer and sent with one write.
async fn writer(mut write: OwnedWriteHalf, mut outbox: mpsc::UnboundedReceiver<Reply>) {
    let greeting = json!({"QMP": {"version": {"qemu": {"micro": 0, "minor": 1, "major": 0},
        "package": "tuned-qmp"}, "capabilities": ["oob"]}});
    let mut buf = format!("{greeting}\r\n").into_bytes();
    if write.write_all(&buf).await.is_err() {
        return;
    }
    while let Some(first) = outbox.recv().await {
        buf.clear();
        encode(&mut buf, first);
        while let Ok(next) = outbox.try_recv() {
            encode(&mut buf, next);
        }
        if write.write_all(&buf).await.is_err() {
            return;
        }
    }
}

fn encode(buf: &mut Vec<u8>, reply: Reply) {
    let mut value = match reply.value {
        Some(value) => json!({ "return": value }),
        None => {
            let desc = format!("The command {} has not been found", reply.command);
            json!({"error": {"class": "CommandNotFound", "desc": desc}})
        }
    };
    if let Some(id) = reply.id {
        value["id"] = id;
    }
    serde_json::to_writer(&mut *buf, &value).expect("a JSON value always encodes");
    buf.extend_from_slice(b"\r\n");
}
