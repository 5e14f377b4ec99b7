//! Embedding the engine with your own commands: a tiny key-value control plane.
//!
//! - `kv-set` is in-band: it runs on the executor, in one total order with every other
//!   in-band command, and owns the map (`&mut Store`).
//! - `kv-version` is allow-oob: sent with `exec-oob`, it runs on the parser thread that read
//!   it and answers at once from a value the executor publishes (`&Published`), even while the
//!   executor is busy.
//!
//! Run it: `cargo run -p ooblane --example custom_commands`. It starts a server on an
//! ephemeral port, talks QMP to it over TCP, prints the exchange and shuts down.

#![allow(clippy::print_stdout, reason = "the example shows its exchange on stdout")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ooblane::{Address, CommandError, Config, NoArgs, Registry, Server};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Owned by the executor.
#[derive(Default)]
struct Store {
    map: HashMap<String, String>,
}

/// Shared with OOB handlers: read-mostly, never blocks.
#[derive(Default)]
struct Published {
    version: AtomicU64,
}

/// Arguments are decoded on the parser thread into this owned, typed value; `JsonSchema`
/// lets `query-qmp-schema` and `rpc.discover` describe them; `Serialize` is how a
/// replicated command's arguments are logged (durable and cluster modes).
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SetArgs {
    key: String,
    value: String,
}

#[derive(Serialize, JsonSchema)]
struct Version {
    version: u64,
}

fn registry() -> Registry<Store, Published> {
    let mut registry = Registry::new(Store::default(), Arc::new(Published::default()));
    registry
        .inband("kv-set", |exec, args: SetArgs| {
            if args.key.is_empty() {
                return Err(CommandError::generic("'key' must not be empty"));
            }
            exec.state().map.insert(args.key, args.value);
            let version = exec.ctx().shared().version.fetch_add(1, Ordering::Release) + 1;
            Ok(Version { version })
        })
        .allow_oob("kv-version", |ctx, _: NoArgs| {
            Ok(Version { version: ctx.shared().version.load(Ordering::Acquire) })
        });
    registry
}

fn main() -> anyhow::Result<()> {
    let config = Config {
        qmp: vec!["tcp:127.0.0.1:0".parse()?],
        threads: 1,
        pin: false,
        ..Config::default()
    };
    let server = Server::start(config, registry())?;
    let Address::Tcp(addr) = server.qmp_addrs()[0].clone() else { unreachable!("asked for TCP") };
    println!("serving on {addr}");

    let mut stream = TcpStream::connect(addr)?;
    let mut lines = BufReader::new(stream.try_clone()?).lines();
    println!("<- {}", lines.next().expect("greeting")?);
    for request in [
        r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#,
        r#"{"execute":"kv-set","arguments":{"key":"vm1","value":"running"},"id":1}"#,
        r#"{"exec-oob":"kv-version","id":2}"#,
        r#"{"execute":"kv-set","arguments":{"key":""},"id":3}"#,
        r#"{"exec-oob":"kv-set","arguments":{"key":"a","value":"b"},"id":4}"#,
    ] {
        println!("-> {request}");
        stream.write_all(request.as_bytes())?;
        println!("<- {}", lines.next().expect("reply")?);
    }
    server.shutdown();
    Ok(())
}
