//! Descriptor exhaustion against the `ooblane` binary run with its descriptor limit at 1024
//! (`prlimit`, from util-linux): a flood of 4,000 connection attempts, past the connection
//! cap and past the descriptor limit itself, gets one exact error line per refused client;
//! once every client has closed, a new client is served (greeting and a command answered)
//! within a second. Warnings about it are rate-limited.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Every connect and read waits at most this long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The engine's descriptor limit (soft and hard), as in the issue's attack.
const FD_LIMIT: u64 = 1024;
/// Connection attempts of the flood.
const ATTEMPTS: usize = 4000;
/// What a recovered engine must take at most to serve a new client.
const RECOVERY: Duration = Duration::from_secs(1);
/// Parser threads (each its own listener, reserve descriptor and warnings).
const THREADS: usize = 2;

/// The engine under `prlimit`; killed on drop.
struct Engine {
    child: Child,
    qmp: String,
    jsonrpc: String,
    /// Every stderr line (the log), as read by a helper thread.
    log: mpsc::Receiver<String>,
}

impl Engine {
    fn start(extra: &[&str]) -> Engine {
        let limit = format!("--nofile={FD_LIMIT}:{FD_LIMIT}");
        let mut child = Command::new("prlimit")
            .arg(limit)
            .arg(env!("CARGO_BIN_EXE_ooblane"))
            .args(["--qmp", "tcp:127.0.0.1:0", "--jsonrpc", "tcp:127.0.0.1:0", "--no-pin"])
            .args(["--threads", &THREADS.to_string()])
            .args(extra)
            .env("RUST_LOG", "ooblane=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prlimit (util-linux) runs the engine");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut addr = |prefix: &str| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("address line");
            line.trim().strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?}")).to_owned()
        };
        let qmp = addr("QMP listening on tcp:");
        let jsonrpc = addr("JSON-RPC listening on tcp:");
        let (tx, log) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        std::thread::spawn(move || {
            stderr.lines().map_while(Result::ok).try_for_each(|l| tx.send(l))
        });
        Engine { child, qmp, jsonrpc, log }
    }

    /// Log lines so far that are warnings.
    fn warnings(&self) -> Vec<String> {
        self.log.try_iter().filter(|line| line.contains("WARN")).collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that has read its first line.
struct Client {
    lines: BufReader<TcpStream>,
    first: String,
}

fn connect(addr: &str) -> Client {
    let addr = addr.parse().expect("an address");
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut lines = BufReader::new(stream);
    let mut first = String::new();
    lines.read_line(&mut first).expect("a first line within the timeout");
    Client { lines, first }
}

impl Client {
    fn greeted(&self) -> bool {
        self.first.starts_with(r#"{"QMP":"#)
    }

    /// The server closed the connection after its first line.
    fn closed(&mut self) -> bool {
        let mut rest = String::new();
        self.lines.read_line(&mut rest).expect("end of stream within the timeout") == 0
    }

    /// Negotiates and runs one command; returns its reply.
    fn negotiate_and_ping(&mut self) -> String {
        let stream = self.lines.get_mut();
        stream.write_all(br#"{"execute":"qmp_capabilities"}{"execute":"ping","id":1}"#).unwrap();
        let mut reply = String::new();
        for _ in 0..2 {
            reply.clear();
            self.lines.read_line(&mut reply).expect("a reply within the timeout");
        }
        reply
    }
}

/// This test process holds a thousand sockets at once: lift its own soft limit.
fn raise_own_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = 4 * FD_LIMIT;
    if limit.current.is_some_and(|soft| soft < wanted) {
        let hard = limit.maximum.map_or(wanted, |hard| hard.min(wanted));
        setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: limit.maximum })
            .expect("raise this test's descriptor limit");
        assert!(hard >= 2 * FD_LIMIT, "this test needs a hard descriptor limit of 2048");
    }
}

/// Makes `ATTEMPTS` connection attempts, holding every one that was greeted; the others
/// must have got exactly `refusal` and been closed. Returns the held ones.
fn flood(addr: &str, refusal: &str) -> Vec<Client> {
    let mut held = Vec::new();
    for attempt in 0..ATTEMPTS {
        let mut client = connect(addr);
        if client.greeted() {
            held.push(client);
        } else {
            assert_eq!(client.first, refusal, "attempt {attempt}");
            assert!(client.closed(), "a refused connection is closed");
        }
    }
    held
}

/// After the flood's clients closed: a new client is greeted and served within
/// [`RECOVERY`] (retrying while the engine still counts the closing ones).
fn assert_recovers(addr: &str) -> Duration {
    let closed = Instant::now();
    loop {
        let mut client = connect(addr);
        if client.greeted() {
            assert_eq!(client.negotiate_and_ping(), "{\"return\":{},\"id\":1}\r\n");
            return closed.elapsed();
        }
        assert!(closed.elapsed() < RECOVERY, "still refused after {RECOVERY:?}: {}", client.first);
    }
}

/// Warnings stay few however many connections are refused: one per kind per thread per
/// second, at most.
fn assert_rate_limited(warnings: &[String], elapsed: Duration) {
    let allowed = 3 * THREADS * (elapsed.as_secs() as usize + 1);
    assert!(warnings.len() <= allowed, "{} warnings in {elapsed:?}: {warnings:#?}", warnings.len());
}

#[test]
#[allow(clippy::print_stderr, reason = "the recovery time and warning count are the evidence")]
fn past_the_default_cap_clients_get_one_error_and_the_engine_recovers() {
    raise_own_fd_limit();
    let engine = Engine::start(&[]);
    let started = Instant::now();
    // The default cap at a limit of 1024: 1024 - 64.
    let limit = 960;
    let qmp_refusal = format!(
        "{{\"error\":{{\"class\":\"GenericError\",\"desc\":\"too many connections (limit {limit})\"}}}}\r\n"
    );
    let held = flood(&engine.qmp, &qmp_refusal);
    assert_eq!(held.len(), limit, "connections up to the cap are served");

    let mut rpc = connect(&engine.jsonrpc);
    let rpc_refusal = format!(
        "{{\"id\":null,\"result\":null,\"error\":{{\"error\":\"GenericError\",\"details\":\"too many connections (limit {limit})\"}}}}\n"
    );
    assert_eq!(rpc.first, rpc_refusal, "JSON-RPC refuses in its own dialect");
    assert!(rpc.closed());

    drop(held);
    let recovery = assert_recovers(&engine.qmp);
    let warnings = engine.warnings();
    assert!(!warnings.is_empty(), "refusals are logged");
    assert_rate_limited(&warnings, started.elapsed());
    eprintln!("cap: recovered in {recovery:?}, {} warnings", warnings.len());
}

#[test]
#[allow(clippy::print_stderr, reason = "the recovery time and warning count are the evidence")]
fn out_of_descriptors_clients_get_one_error_and_the_engine_recovers() {
    raise_own_fd_limit();
    // A cap above the descriptor limit: the engine meets EMFILE itself.
    let engine = Engine::start(&["--max-connections", "100000"]);
    let started = Instant::now();
    let refusal = "{\"error\":{\"class\":\"GenericError\",\"desc\":\"too many connections (out of file descriptors)\"}}\r\n";
    let held = flood(&engine.qmp, refusal);
    let fd_limit = usize::try_from(FD_LIMIT).unwrap();
    assert!(
        (fd_limit - 64..fd_limit).contains(&held.len()),
        "every descriptor but the engine's own serves a client: {}",
        held.len()
    );
    drop(held);
    let recovery = assert_recovers(&engine.qmp);
    let warnings = engine.warnings();
    assert!(!warnings.is_empty(), "refusals are logged");
    assert_rate_limited(&warnings, started.elapsed());
    eprintln!("EMFILE: recovered in {recovery:?}, {} warnings", warnings.len());
}
