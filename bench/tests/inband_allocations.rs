//! Checks the target "the in-band round trip allocates nothing per request in steady state",
//! by count, on every thread: the parser thread's path (frame, peek, decode the arguments into
//! a reused call, batch the hand-off), the executor's (run the call, deliver the outcome), and
//! the parser thread's again (write the reply, recycle the call), for the demo commands whose
//! arguments and results own no heap memory.
//!
//! Unlike `peek_allocations.rs`, the count must include the executor thread, so this binary
//! installs `stats_alloc`'s global counting allocator (process-wide counters) and holds one
//! test only: nothing else runs while it measures.

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Warm-up feeds; the warm-up also lasts past a few of the executor's statistics
/// publications (every 50 ms), whose first waits set up thread-local state once.
const WARM: usize = 20;
const WARM_FOR: std::time::Duration = std::time::Duration::from_millis(300);
const MEASURED: usize = 100;

#[test]
fn the_in_band_round_trip_allocates_nothing_per_request_after_warm_up() {
    let probe = Region::new(GLOBAL);
    drop(std::hint::black_box(vec![0u8; 16]));
    assert_eq!(probe.change().allocations, 1, "the counting allocator is installed");

    let mut pipeline = ooblane::internals::Pipeline::start();
    let burst = concat!(
        r#"{"execute":"ping","id":1}"#,
        r#"{"execute":"work","arguments":{"us":0},"id":"w"}"#,
        r#"{"execute":"counter-add","arguments":{"delta":1},"id":[3]}"#,
        r#"{"execute":"query-counter","id":{"n":4}}"#,
    )
    .repeat(64);
    let started = std::time::Instant::now();
    let mut fed = 0;
    while fed < WARM || started.elapsed() < WARM_FOR {
        pipeline.feed(burst.as_bytes());
        fed += 1;
        if fed >= WARM {
            std::thread::sleep(std::time::Duration::from_millis(20)); // quiet spells, as in use
        }
    }
    let region = Region::new(GLOBAL);
    for _ in 0..MEASURED {
        assert!(pipeline.feed(burst.as_bytes()) > 0);
    }
    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "25,600 in-band requests on every thread: {change:?}"
    );
}
