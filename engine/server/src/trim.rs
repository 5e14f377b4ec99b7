//! Memory return for the `ooblane` binary: glibc's malloc keeps what the server frees, so a
//! thread of its own (`engine-trim`) gives it back. The library picks no allocator and trims
//! nothing: an embedding program keeps its own policy (docs/operations.md#memory).

pub use memory_return::start;

/// Gives freed memory back to the system. glibc's malloc keeps what the engine frees: after
/// 500 connections pipelining behind a `stall` closed, 817 MiB stayed resident (an idle
/// engine: 7 MiB). Once a second a thread compares the resident set with what malloc has in
/// use; when the process holds more than `SPARE` of freed memory, and `SPARE` more than
/// after the last trim, it calls `malloc_trim(0)`, which returns every free page of every
/// arena; that brought the same run back to 11 MiB within 2 s. Measured against jemalloc
/// (36 MiB: its metadata stays), mimalloc and tcmalloc (neither gave anything back) in
/// results/2026-12-01-hardening.
///
/// The binary's own choice: the library sets no allocator and trims nothing, so an
/// embedding program keeps its own policy (docs/operations.md#memory).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod memory_return {
    use std::time::Duration;

    /// Freed memory the process may keep resident (reused at once under load) before a trim.
    const SPARE: usize = 32 << 20;
    /// How often the resident set is compared with malloc's count.
    const EVERY: Duration = Duration::from_secs(1);

    /// Starts the thread (`engine-trim`); a failure to start it is logged, not fatal.
    pub fn start() {
        let spawned = std::thread::Builder::new().name("engine-trim".into()).spawn(run);
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the memory-return thread");
        }
    }

    fn run() {
        let page = rustix::param::page_size();
        // Freed memory still resident after the last trim: what fragmentation keeps (pages
        // with a live allocation on them), which another trim would not give back.
        let mut kept = 0;
        loop {
            std::thread::sleep(EVERY);
            let Some(before) = resident(page) else { return };
            let spare = before.saturating_sub(in_use());
            kept = kept.min(spare);
            if spare <= SPARE || spare <= kept + SPARE {
                continue;
            }
            trim();
            let after = resident(page).unwrap_or(before);
            kept = after.saturating_sub(in_use());
            tracing::debug!(before, after, "malloc_trim");
        }
    }

    /// The resident set, from `/proc/self/statm`.
    fn resident(page: usize) -> Option<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * page)
    }

    /// Bytes malloc has handed out and not had back (arenas and its own mmaps).
    #[allow(unsafe_code)]
    fn in_use() -> usize {
        // SAFETY: mallinfo2 takes no arguments and only reads malloc's own statistics
        // (under the arenas' locks); it is thread-safe and has no preconditions.
        let info = unsafe { libc::mallinfo2() };
        info.uordblks + info.hblkhd
    }

    #[allow(unsafe_code)]
    fn trim() {
        // SAFETY: malloc_trim takes the arenas' locks itself and only returns free pages to
        // the system; it is thread-safe and has no preconditions.
        unsafe { libc::malloc_trim(0) };
    }
}

/// Other targets keep their allocator's own policy.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod memory_return {
    /// Does nothing: other targets keep their allocator's own policy.
    pub fn start() {}
}
