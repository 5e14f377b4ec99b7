// Round trips through the engine's own hand-off (parser-side sender, executor thread,
// mailbox wake-up): ARG1 round trips of ARG2 no-op jobs each.
fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut h = ooblane::internals::Handoff::start();
    for _ in 0..n {
        h.round_trip(batch);
    }
    println!("{n} round trips of {batch}");
}
