//! The demo command set (docs/protocol.md#demo-command-set), registered through the public
//! [`Registry`] API exactly as an embedding user would. The `ooblane` binary serves it; tests and
//! the load generator use it.
//!
//! In-band handlers run on the executor; `ping`, `query-counter`, `release`, `query-stats`
//! and `query-cluster` are allow-oob and must never block. `counter-add` is the one
//! replicated command (it changes the state); `query-counter` sent in-band is a
//! linearizable read; `cluster-remove-member` is handed to the replicated log; the other
//! in-band commands run on this member only. `query-qmp-schema` (QMP introspection)
//! and `rpc.discover` (OpenRPC) answer from the registry's own recorded schemas; the one
//! event the set emits by itself, `SHUTDOWN`, is declared so introspection lists it. `stall`/`release` reproduce QEMU's own
//! OOB test: a blocked executor, and an OOB command that must still answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use ooblane_wire::{CommandError, Empty, NoArgs, VersionInfo};
use parking_lot::{Condvar, Mutex};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::exec::CommandInfo;
use crate::introspect::SchemaInfo;
use crate::openrpc::{DISCOVER, OpenRpc};
use crate::registry::Registry;
use crate::replication::ClusterStatus;
use crate::stats::StatsSnapshot;

/// Longest `work` accepted: simulated service time is for load tests, not for wedging the
/// executor for minutes.
const MAX_WORK: Duration = Duration::from_secs(10);
/// `stall` without `timeout-ms` waits this long for `release`.
const DEFAULT_STALL: Duration = Duration::from_secs(60);
/// Longest `stall` accepted.
const MAX_STALL: Duration = Duration::from_secs(600);

/// State owned by the executor (its snapshot form is its JSON).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DemoState {
    counter: i64,
}

/// State shared with OOB handlers.
#[derive(Debug, Default)]
pub struct DemoShared {
    /// `counter` as last published by the executor.
    counter: AtomicI64,
    gate: Gate,
}

/// Where `stall` waits for `release`. Only the executor ever waits here.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// Stalls waiting now (0 or 1: only the executor stalls).
    waiting: u64,
    /// Bumped by each release; a stall ends when it changes.
    generation: u64,
    /// Shutdown began: stalls end at once, as released.
    closed: bool,
}

impl Gate {
    /// Blocks until released or `timeout`; true if released (by `release` or shutdown).
    pub fn stall(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        if state.closed {
            return true;
        }
        let generation = state.generation;
        state.waiting += 1;
        while state.generation == generation {
            if self.cond.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        let released = state.generation != generation;
        if !released {
            state.waiting -= 1;
        }
        released
    }

    /// Releases every waiting stall; returns how many.
    pub fn release(&self) -> u64 {
        let mut state = self.state.lock();
        let released = state.waiting;
        if released > 0 {
            state.waiting = 0;
            state.generation += 1;
            self.cond.notify_all();
        }
        released
    }

    /// Releases every stall and makes later ones return at once.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.release();
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WorkArgs {
    us: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CounterAddArgs {
    delta: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StallArgs {
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EmitEventArgs {
    event: String,
    data: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Serialize, JsonSchema)]
struct CounterValue {
    value: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
struct Released<T> {
    released: T,
}

/// The `SHUTDOWN` event's data, as QEMU sends it.
#[derive(Debug, Serialize, JsonSchema)]
struct ShutdownData {
    /// Always false: no guest here.
    guest: bool,
    /// `host-qmp-quit`, `host-signal`, ...
    reason: String,
}

/// The demo command set.
pub fn registry() -> Registry<DemoState, DemoShared> {
    let mut registry = Registry::new(DemoState::default(), Arc::new(DemoShared::default()));
    registry
        .inband_local("query-version", |exec, _: NoArgs| -> Result<VersionInfo, _> {
            Ok(exec.ctx().version().clone())
        })
        .inband_local("query-commands", |exec, _: NoArgs| -> Result<Vec<CommandInfo>, _> {
            Ok(exec.ctx().commands().to_vec())
        })
        .allow_oob("ping", |_, _: NoArgs| Ok(Empty {}))
        .inband_local("work", |_, args: WorkArgs| {
            let time = Duration::from_micros(args.us);
            if time > MAX_WORK {
                return Err(CommandError::generic(format!("'us' must be at most {MAX_WORK:?}")));
            }
            spin(time);
            Ok(Empty {})
        })
        .inband("counter-add", |exec, args: CounterAddArgs| {
            let state = exec.state();
            state.counter = state
                .counter
                .checked_add(args.delta)
                .ok_or_else(|| CommandError::generic("counter overflow"))?;
            let value = state.counter;
            exec.ctx().shared().counter.store(value, Ordering::Release);
            Ok(CounterValue { value })
        })
        .allow_oob_read("query-counter", |ctx, _: NoArgs| {
            Ok(CounterValue { value: ctx.shared().counter.load(Ordering::Acquire) })
        })
        .inband_local("stall", |exec, args: StallArgs| {
            let timeout = args.timeout_ms.map_or(DEFAULT_STALL, Duration::from_millis);
            if timeout > MAX_STALL {
                return Err(CommandError::generic(format!(
                    "'timeout-ms' must be at most {}",
                    MAX_STALL.as_millis()
                )));
            }
            Ok(Released { released: exec.ctx().shared().gate.stall(timeout) })
        })
        .allow_oob("release", |ctx, _: NoArgs| {
            Ok(Released { released: ctx.shared().gate.release() })
        })
        .allow_oob("query-stats", |ctx, _: NoArgs| -> Result<StatsSnapshot, _> { Ok(ctx.stats()) })
        .allow_oob("query-cluster", |ctx, _: NoArgs| -> Result<ClusterStatus, _> {
            ctx.cluster().ok_or_else(|| {
                CommandError::generic(
                    "this engine is not clustered (start it with --cluster or --data)",
                )
            })
        })
        .inband_local("query-qmp-schema", |exec, _: NoArgs| -> Result<Vec<SchemaInfo>, _> {
            Ok(exec.ctx().qmp_schema().to_vec())
        })
        .inband_local(DISCOVER, |exec, _: NoArgs| -> Result<OpenRpc, _> {
            Ok(exec.ctx().openrpc().clone())
        })
        .cluster_admin()
        .event::<ShutdownData>("SHUTDOWN")
        .inband_local("emit-event", |exec, args: EmitEventArgs| {
            exec.emit_event(args.event, args.data.map(serde_json::Value::Object));
            Ok(Empty {})
        })
        .inband_local("quit", |exec, _: NoArgs| {
            exec.request_shutdown("host-qmp-quit");
            Ok(Empty {})
        })
        .on_shutdown(|shared| shared.gate.close())
        .snapshots(
            |state| serde_json::to_vec(state).map_err(|e| e.to_string()),
            |bytes, shared| {
                let state: DemoState = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
                shared.counter.store(state.counter, Ordering::Release);
                Ok(state)
            },
        );
    registry
}

/// Busy-waits: simulated service time that occupies the executor like real work would.
fn spin(time: Duration) {
    let until = Instant::now() + time;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_ends_a_stall_and_reports_the_count() {
        let gate = Arc::new(Gate::default());
        let stalled = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || gate.stall(Duration::from_secs(30)))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut released = 0;
        while released == 0 && Instant::now() < deadline {
            released = gate.release();
            std::thread::yield_now();
        }
        assert_eq!(released, 1);
        assert!(stalled.join().unwrap());
        assert_eq!(gate.release(), 0);
    }

    #[test]
    fn a_stall_times_out_unreleased_and_a_closed_gate_never_stalls() {
        let gate = Gate::default();
        assert!(!gate.stall(Duration::from_millis(1)));
        gate.close();
        assert!(gate.stall(Duration::from_secs(30)), "released by shutdown at once");
    }
}
