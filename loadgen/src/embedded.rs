//! The embedded default target: an in-process engine with the demo command set on an
//! ephemeral loopback port, so `loadgen` with no arguments measures something real.
//!
//! Started before the drivers and shut down (gracefully, joining its threads) when dropped
//! after them. Not pinned: on a small machine loadgen's driver thread shares the cores with
//! the engine's threads, and pinning would make them fight over the same cores instead of
//! letting the scheduler balance. Its threads are named `engine-parser-N` and
//! `engine-executor`, which is how the server-cost sampler (`server_cost`) counts the
//! engine's CPU and context switches apart from loadgen's own threads in the same process.

use ooblane::{Config, Server, ServerHandle};

use crate::config::Protocol;
use crate::{Address, Error};

/// A running in-process engine.
#[derive(Debug)]
pub(crate) struct Embedded {
    handle: ServerHandle,
}

/// Loopback with an ephemeral port, resolved by the engine at bind time.
const EPHEMERAL: &str = "tcp:127.0.0.1:0";

impl Embedded {
    /// Starts the engine with a listener for `protocol`.
    pub(crate) fn start(protocol: Protocol) -> Result<Embedded, Error> {
        let address: Address = EPHEMERAL
            .parse()
            .map_err(|e: ooblane_wire::AddressError| Error::Engine(e.to_string()))?;
        let mut config = Config { pin: false, ..Config::default() };
        match protocol {
            Protocol::Qmp => config.qmp = vec![address],
            Protocol::JsonRpc => config.jsonrpc = vec![address],
            Protocol::Echo | Protocol::Etcd => {
                let name = protocol.name();
                return Err(Error::Config(format!("the {name} protocol needs --remote")));
            }
        }
        let handle = Server::start(config, ooblane::demo::registry())
            .map_err(|e| Error::Engine(e.to_string()))?;
        tracing::info!(qmp = ?handle.qmp_addrs(), jsonrpc = ?handle.jsonrpc_addrs(), "embedded engine started");
        Ok(Embedded { handle })
    }

    /// The addresses to load.
    pub(crate) fn remotes(&self, protocol: Protocol) -> Vec<Address> {
        match protocol {
            Protocol::JsonRpc => self.handle.jsonrpc_addrs().to_vec(),
            _ => self.handle.qmp_addrs().to_vec(),
        }
    }
}
