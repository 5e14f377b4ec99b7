//! The demo commands as the comparison servers (`naive-qmp`, `tuned-qmp`) run them: the
//! engine's semantics for the commands the benchmarks and the results suite send, in plain
//! `serde_json`, so each server differs from the engine only in how it moves requests.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Runs `command` on `counter` (the in-band state; OOB callers pass a scratch one): its
/// return value, or `None` for a command these servers do not have.
pub fn run(command: &str, args: &Value, counter: &mut i64) -> Option<Value> {
    Some(match command {
        "ping" | "qmp_capabilities" => json!({}),
        "counter-add" => {
            *counter += args["delta"].as_i64().unwrap_or(0);
            json!({ "value": *counter })
        }
        "query-counter" => json!({ "value": *counter }),
        "work" => {
            let until = Instant::now() + Duration::from_micros(args["us"].as_u64().unwrap_or(0));
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            json!({})
        }
        _ => return None,
    })
}
