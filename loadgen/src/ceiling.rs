//! The loopback ceiling: a raw echo server on 127.0.0.1 loaded with the same connections,
//! depth and request bytes as a real run, so throughput can be quoted as a fraction of what
//! this machine's loopback (and this client) can carry at all.
//!
//! The echo server is deliberately minimal: a thread per connection doing blocking `read`
//! then `write_all` of the same bytes, no parsing. The client is the normal driver with the
//! `echo` dialect, where a request coming back counts as its reply, so the client-side cost
//! (encoding, framing, parsing, matching, recording) is the same as in a real run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::config::{Mode, Protocol, RunConfig};
use crate::{Address, Error, Run, run};

/// Depth used for the ceiling when the run itself was open loop: deep enough to keep the
/// loopback busy, shallow enough not to measure queueing.
pub const DEFAULT_CEILING_DEPTH: usize = 32;

/// Bytes per echo `read`: many pipelined requests per syscall.
const ECHO_BUF: usize = 64 << 10;

/// A running loopback echo server; stops and joins its acceptor on drop.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds 127.0.0.1 on an ephemeral port and starts accepting.
    pub fn start() -> Result<EchoServer, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind echo server"))?;
        let addr = listener.local_addr().map_err(Error::io("echo server address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let acceptor = thread::Builder::new()
            .name("loadgen-echo".into())
            .spawn(move || accept_loop(&listener, &flag))
            .map_err(Error::io("spawn echo server"))?;
        Ok(EchoServer { addr, stop, acceptor: Some(acceptor) })
    }

    /// The address to connect to.
    pub fn address(&self) -> Address {
        Address::Tcp(self.addr)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let _ = thread::Builder::new().name("loadgen-echo-conn".into()).spawn(move || echo(stream));
    }
}

/// Echoes until the client closes.
fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; ECHO_BUF];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// The configuration of the ceiling measurement for a run configured as `cfg`.
pub fn ceiling_config(cfg: &RunConfig, echo: Address) -> RunConfig {
    let depth = match cfg.mode {
        Mode::Closed { depth } => depth,
        Mode::Open => DEFAULT_CEILING_DEPTH,
    };
    RunConfig {
        remotes: vec![echo],
        protocol: Protocol::Echo,
        mode: Mode::Closed { depth },
        warmup: cfg.warmup.min(Duration::from_secs(1)),
        duration: cfg.duration.min(Duration::from_secs(5)),
        expect_errors: false,
        server_pids: Vec::new(),
        label: format!("{}-ceiling", cfg.label),
        ..cfg.clone()
    }
}

/// Measures the loopback ceiling for `cfg`'s shape; returns the run (its total rate is the
/// ceiling).
pub fn measure(cfg: &RunConfig) -> Result<Run, Error> {
    let server = EchoServer::start()?;
    let result = run(&ceiling_config(cfg, server.address()));
    drop(server);
    result
}
