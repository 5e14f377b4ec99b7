//! Helpers for the integration tests: an in-process engine on an ephemeral port that shuts
//! down when dropped, and a line-based QMP client over a real socket whose every read has a
//! timeout (a hung test fails with a message instead of hanging CI).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use ooblane::{Address, Config, ReplicatedLog, ServerHandle};
use ooblane_server::metrics::MetricsEndpoint;
use serde_json::{Value, json};

/// How long any single read waits before the test fails. Generous: CI machines are shared
/// and slow, and a passing test never waits this long.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// An engine serving the demo command set; shut down (gracefully) on drop.
#[derive(Debug)]
pub struct TestServer {
    /// The running server; `None` once [`TestServer::shutdown`] took it.
    pub handle: Option<ServerHandle>,
    /// The first QMP address (TCP, or the Unix socket if only that was asked).
    pub addr: Address,
    /// The Prometheus endpoint, when started with [`start_server_with_metrics`].
    pub metrics: Option<MetricsEndpoint>,
}

impl TestServer {
    /// Shuts down and waits, answering everything already read.
    pub fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }

    /// The running server's handle.
    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("server running")
    }

    /// The bound Prometheus endpoint.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.metrics.as_ref().expect("started with metrics").addr()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

/// The test configuration: QMP on 127.0.0.1 port 0, two parser threads, no pinning (the
/// tests share the machine with each other).
pub fn test_config() -> Config {
    Config {
        qmp: vec!["tcp:127.0.0.1:0".parse().expect("valid address")],
        threads: 2,
        pin: false,
        ..Config::default()
    }
}

/// Starts the demo engine with [`test_config`].
pub fn start_server() -> TestServer {
    start_server_with(test_config())
}

/// Starts the demo engine serving JSON-RPC (only) on 127.0.0.1 port 0.
pub fn start_jsonrpc_server() -> TestServer {
    start_jsonrpc_server_with(test_config())
}

/// Starts the demo engine with `config`, its QMP listeners serving JSON-RPC instead.
pub fn start_jsonrpc_server_with(mut config: Config) -> TestServer {
    config.jsonrpc = std::mem::take(&mut config.qmp);
    let handle = ooblane::Server::start(config, ooblane::demo::registry()).expect("server starts");
    let addr = handle.jsonrpc_addrs()[0].clone();
    TestServer { handle: Some(handle), addr, metrics: None }
}

/// Starts the demo engine with `config`.
pub fn start_server_with(config: Config) -> TestServer {
    let handle = ooblane::Server::start(config, ooblane::demo::registry()).expect("server starts");
    let addr = handle.qmp_addrs()[0].clone();
    TestServer { handle: Some(handle), addr, metrics: None }
}

/// Starts the demo engine with `config` and a Prometheus endpoint on 127.0.0.1 port 0.
pub fn start_server_with_metrics(config: Config) -> TestServer {
    let mut server = start_server_with(config);
    let address = "tcp:127.0.0.1:0".parse().expect("valid address");
    let stats = server.handle().stats_source();
    server.metrics = Some(MetricsEndpoint::start(&address, stats).expect("metrics start"));
    server
}

/// Starts the demo engine with `config`, its replicated commands going through `log`.
pub fn start_replicated_with(config: Config, log: impl ReplicatedLog + 'static) -> TestServer {
    let handle = ooblane::Server::start_replicated(config, ooblane::demo::registry(), log)
        .expect("server starts");
    let addr = handle.qmp_addrs()[0].clone();
    TestServer { handle: Some(handle), addr, metrics: None }
}

/// A fresh path for a Unix socket in the temp directory.
pub fn temp_socket_path(tag: &str) -> PathBuf {
    let unique =
        format!("engine-test-{}-{tag}-{:?}.sock", std::process::id(), std::thread::current().id());
    std::env::temp_dir().join(unique.replace(['(', ')'], ""))
}

/// Either kind of stream.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A client that sends raw bytes and reads JSON lines (QMP ends them with `\r\n`,
/// JSON-RPC with `\n`; each is checked).
#[derive(Debug)]
pub struct Client {
    writer: Stream,
    reader: BufReader<Stream>,
    eol: &'static str,
}

impl Client {
    /// Connects and reads nothing yet.
    pub fn connect(addr: &Address) -> Client {
        let stream = match addr {
            Address::Tcp(a) => {
                let s = TcpStream::connect_timeout(a, READ_TIMEOUT).expect("connect");
                s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
                s.set_nodelay(true).expect("nodelay");
                Stream::Tcp(s)
            }
            Address::Unix(p) => {
                let s = UnixStream::connect(p).expect("connect");
                s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
                Stream::Unix(s)
            }
        };
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { writer: stream, reader, eol: "\r\n" }
    }

    /// Connects to a JSON-RPC listener (lines end with `\n`, no greeting).
    pub fn jsonrpc(addr: &Address) -> Client {
        Client { eol: "\n", ..Client::connect(addr) }
    }

    /// Connects, reads the greeting and negotiates `oob`.
    pub fn negotiated(addr: &Address) -> Client {
        let mut client = Client::connect(addr);
        let greeting = client.recv();
        assert_eq!(greeting["QMP"]["capabilities"], json!(["oob"]), "{greeting}");
        client.send(r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#);
        assert_eq!(client.recv(), json!({"return": {}}));
        client
    }

    /// A second handle that writes to the same connection (for writing from another
    /// thread while this one reads).
    pub fn clone_writer(&self) -> Client {
        let writer = self.writer.try_clone().expect("clone");
        let reader = BufReader::new(self.writer.try_clone().expect("clone"));
        Client { writer, reader, eol: self.eol }
    }

    /// Sends raw bytes exactly as given.
    pub fn send(&mut self, raw: &str) {
        self.send_bytes(raw.as_bytes());
    }

    /// Sends raw bytes exactly as given.
    pub fn send_bytes(&mut self, raw: &[u8]) {
        self.writer.write_all(raw).expect("send");
    }

    /// Reads one line, checks its `\r\n` ending and parses it.
    pub fn recv(&mut self) -> Value {
        let line = self.recv_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"))
    }

    /// Reads one raw line without its `\r\n`.
    pub fn recv_line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("connection closed while waiting for a reply"),
            Ok(_) => {}
            Err(e) => panic!("no reply within {READ_TIMEOUT:?}: {e}"),
        }
        let ending = if self.eol == "\n" { !line.ends_with("\r\n") } else { true };
        assert!(line.ends_with(self.eol) && ending, "line not ended by {:?}: {line:?}", self.eol);
        line.truncate(line.len() - self.eol.len());
        line
    }

    /// The buffered reader, for tests that read raw lines until end of stream.
    pub fn reader(&mut self) -> &mut impl BufRead {
        &mut self.reader
    }

    /// Reads `n` lines.
    pub fn recv_n(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.recv()).collect()
    }

    /// Sends one request and reads one line.
    pub fn request(&mut self, raw: &str) -> Value {
        self.send(raw);
        self.recv()
    }

    /// True if the server closed the connection (reads until EOF, failing on timeout or on
    /// any further data).
    pub fn expect_eof(&mut self) {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => {}
            Ok(_) => panic!("expected end of stream, got {line:?}"),
            Err(e) => panic!("expected end of stream: {e}"),
        }
    }

    /// Closes the sending side (the server still answers what was sent).
    pub fn shutdown_write(&mut self) {
        match &self.writer {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
        .expect("shutdown");
    }
}

/// Waits (bounded by [`READ_TIMEOUT`]) until the executor is running a job, as reported by
/// OOB `query-stats`: after sending a `stall`, this is when a `release` will find it.
pub fn wait_until_executor_busy(client: &mut Client) {
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    loop {
        let stats = client.request(r#"{"exec-oob":"query-stats","id":"busy?"}"#);
        assert_eq!(stats["id"], "busy?", "unexpected reply while polling: {stats}");
        if !stats["return"]["executor"]["busy-for-us"].is_null() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the executor never became busy");
        std::thread::yield_now();
    }
}

/// A `GenericError` reply with `desc`, and an `id` when given.
pub fn generic_error(desc: &str, id: Option<Value>) -> Value {
    error("GenericError", desc, id)
}

/// An error reply of `class` with `desc`, and an `id` when given.
pub fn error(class: &str, desc: &str, id: Option<Value>) -> Value {
    let mut reply = json!({"error": {"class": class, "desc": desc}});
    if let Some(id) = id {
        reply["id"] = id;
    }
    reply
}
