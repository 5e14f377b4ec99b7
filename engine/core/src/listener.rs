//! Listening sockets. Each parser thread owns its own listeners: for TCP one socket per
//! thread on the same port with `SO_REUSEPORT` (the kernel spreads connections, no shared
//! accept queue, no lock); for a Unix socket, which the kernel cannot spread, a duplicate of
//! one listening descriptor per thread (whichever thread's `accept` wins takes the client).
//!
//! Binding happens in `Server::start`, on the caller's thread, so errors are reported there.

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;

use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Registry, Token};
use ooblane_wire::Dialect;
use socket2::{Domain, Socket, Type};

use crate::conn::Stream;

/// Pending connections the kernel queues per listening socket before refusing more.
const BACKLOG: i32 = 1024;

/// A listening socket owned by one parser thread.
#[derive(Debug)]
pub(crate) enum ListenSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A listening socket and the dialect its connections speak.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) socket: ListenSocket,
    pub(crate) dialect: Dialect,
}

impl Listener {
    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.socket.register(registry, token)
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket.deregister(registry)
    }

    /// Accepts one pending connection (`WouldBlock` when none is left).
    pub(crate) fn accept(&self) -> io::Result<Stream> {
        self.socket.accept()
    }
}

impl ListenSocket {
    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => registry.register(l, token, Interest::READABLE),
            ListenSocket::Unix(l) => registry.register(l, token, Interest::READABLE),
        }
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => registry.deregister(l),
            ListenSocket::Unix(l) => registry.deregister(l),
        }
    }

    /// Accepts one pending connection (`WouldBlock` when none is left).
    pub(crate) fn accept(&self) -> io::Result<Stream> {
        match self {
            ListenSocket::Tcp(l) => {
                let (stream, _) = l.accept()?;
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            ListenSocket::Unix(l) => Ok(Stream::Unix(l.accept()?.0)),
        }
    }
}

/// Binds one `SO_REUSEPORT` TCP listener. Bind the first with port 0 to pick a port, the
/// others with the port it got.
pub(crate) fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// With `SO_REUSEPORT`, a bind to a port that another process of ours already serves would
/// silently share its connections; refuse instead, as a plain bind would.
pub(crate) fn ensure_tcp_port_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200));
    match probe {
        Ok(_) => Err(io::Error::new(io::ErrorKind::AddrInUse, "a server already listens there")),
        Err(_) => Ok(()),
    }
}

/// Binds a Unix listener, replacing a stale socket file that nobody listens on.
pub(crate) fn bind_unix(path: &Path) -> io::Result<StdUnixListener> {
    let listener = match StdUnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale(path) => {
            std::fs::remove_file(path)?;
            StdUnixListener::bind(path)?
        }
        other => other?,
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn is_stale(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket && std::os::unix::net::UnixStream::connect(path).is_err()
}

/// One thread's copy of a bound Unix listener.
pub(crate) fn clone_unix(listener: &StdUnixListener) -> io::Result<ListenSocket> {
    Ok(ListenSocket::Unix(UnixListener::from_std(listener.try_clone()?)))
}
