//! Listener and remote addresses in the OVS style used everywhere in this project:
//! `tcp:HOST:PORT` and `unix:PATH`.
//!
//! Parsed once at start-up (CLI, config, loadgen `--remote`); never on the request path.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// Where to listen or connect.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP socket address; a host name is resolved when the address is parsed.
    Tcp(SocketAddr),
    /// A Unix stream socket path.
    Unix(PathBuf),
}

/// An address that does not parse, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad address '{text}': {why}")]
pub struct AddressError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, AddressError> {
        let bad = |why: &str| AddressError { text: text.to_owned(), why: why.to_owned() };
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("the path after 'unix:' is empty"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let Some(host_port) = text.strip_prefix("tcp:") else {
            return Err(bad("expected 'tcp:HOST:PORT' or 'unix:PATH'"));
        };
        let (host, port) =
            host_port.rsplit_once(':').ok_or_else(|| bad("expected 'tcp:HOST:PORT'"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port must be a number 0-65535"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let resolved = (host, port)
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve host '{host}': {e}")))?
            .next()
            .ok_or_else(|| bad(&format!("host '{host}' has no address")))?;
        Ok(Address::Tcp(resolved))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "tcp:{addr}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_unix_and_round_trips() {
        let tcp: Address = "tcp:127.0.0.1:4444".parse().unwrap();
        assert_eq!(tcp, Address::Tcp("127.0.0.1:4444".parse().unwrap()));
        assert_eq!(tcp.to_string(), "tcp:127.0.0.1:4444");
        let v6: Address = "tcp:[::1]:80".parse().unwrap();
        assert_eq!(v6.to_string(), "tcp:[::1]:80");
        let unix: Address = "unix:/tmp/x.sock".parse().unwrap();
        assert_eq!(unix.to_string(), "unix:/tmp/x.sock");
        let named: Address = "tcp:localhost:1".parse().unwrap();
        assert!(matches!(named, Address::Tcp(a) if a.ip().is_loopback()));
    }

    #[test]
    fn rejects_bad_addresses_with_reasons() {
        for bad in ["127.0.0.1:4444", "tcp:127.0.0.1", "tcp:127.0.0.1:99999", "unix:", "udp:x:1"] {
            let err = bad.parse::<Address>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
