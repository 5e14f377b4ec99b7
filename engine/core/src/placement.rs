//! Thread layout and pinning: how many parser threads, which core each runs on, and whether
//! the executor has a core of its own. A policy, decided once at start-up from the
//! configuration and the cores this process may use.
//!
//! Default, with C usable cores: C − 1 parser threads on cores 0..C−1 and the executor pinned
//! alone to the last one, so a saturated executor never shares a core with a parser thread
//! (whose OOB replies would then wait for the scheduler). With one core: one parser thread
//! and the executor, unpinned. `threads` overrides the count; the executor keeps a core of
//! its own only if one is left over. Threads may spin before they sleep only in a layout where
//! the executor has a core of its own: spinning on a shared core would take it from the
//! thread it waits for.

use core_affinity::CoreId;

/// Where the engine's threads run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Core of each parser thread (`None`: unpinned); one entry per parser thread.
    pub(crate) parsers: Vec<Option<CoreId>>,
    /// The executor's core, when it has one to itself.
    pub(crate) executor: Option<CoreId>,
    /// Usable cores seen at start-up.
    pub(crate) cores: usize,
}

impl Layout {
    /// Plans the layout for `threads` parser threads (0: the default) over `cores` (the
    /// cores this process may run on, empty when pinning is off or unknown) and
    /// `parallelism` (usable cores when `cores` is empty).
    pub(crate) fn plan(threads: usize, cores: &[CoreId], parallelism: usize) -> Layout {
        let count = if cores.is_empty() { parallelism.max(1) } else { cores.len() };
        let parsers = if threads > 0 { threads } else { count.saturating_sub(1).max(1) };
        if cores.len() < 2 {
            return Layout { parsers: vec![None; parsers], executor: None, cores: count };
        }
        let pinned = (0..parsers).map(|i| Some(cores[i % cores.len()])).collect();
        Layout { parsers: pinned, executor: cores.get(parsers).copied(), cores: count }
    }

    /// The layout for this process: pinned to the cores it may use unless `pin` is off.
    pub(crate) fn for_this_machine(threads: usize, pin: bool) -> Layout {
        let cores = if pin { core_affinity::get_core_ids().unwrap_or_default() } else { vec![] };
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        Layout::plan(threads, &cores, parallelism)
    }

    /// Parser threads.
    pub(crate) fn threads(&self) -> usize {
        self.parsers.len()
    }

    /// Threads may spin before sleeping: the executor has a core nobody else is placed on,
    /// and each parser thread one of its own.
    pub(crate) fn may_spin(&self) -> bool {
        self.executor.is_some()
    }

    /// One line for the start-up log; `spin` and `await_outcomes` are how long the executor
    /// and the parser threads may poll before they sleep.
    pub(crate) fn describe(
        &self,
        spin: std::time::Duration,
        await_outcomes: std::time::Duration,
    ) -> String {
        let parsers = match self.parsers.first() {
            Some(Some(_)) => {
                let ids: Vec<String> =
                    self.parsers.iter().flatten().map(|c| c.id.to_string()).collect();
                format!("{} parser thread(s) on core(s) {}", self.parsers.len(), ids.join(","))
            }
            _ => format!("{} parser thread(s), unpinned", self.parsers.len()),
        };
        let executor = match self.executor {
            Some(core) => format!(
                "executor alone on core {}; spin {spin:?}, await outcomes {await_outcomes:?}",
                core.id
            ),
            None => "executor unpinned, sharing cores; no spinning".to_owned(),
        };
        format!("{parsers}; {executor}; {} usable core(s)", self.cores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(n: usize) -> Vec<CoreId> {
        (0..n).map(|id| CoreId { id }).collect()
    }

    #[test]
    fn by_default_the_executor_gets_the_last_core_to_itself() {
        let layout = Layout::plan(0, &cores(2), 2);
        assert_eq!(layout.parsers, vec![Some(CoreId { id: 0 })]);
        assert_eq!(layout.executor, Some(CoreId { id: 1 }));
        assert!(layout.may_spin());
        let layout = Layout::plan(0, &cores(16), 16);
        assert_eq!(layout.threads(), 15);
        assert_eq!(layout.executor, Some(CoreId { id: 15 }));
    }

    #[test]
    fn one_core_runs_one_parser_thread_and_an_unpinned_executor_that_never_spins() {
        let layout = Layout::plan(0, &cores(1), 1);
        assert_eq!(layout.parsers, vec![None]);
        assert_eq!(layout.executor, None);
        assert!(!layout.may_spin());
    }

    #[test]
    fn threads_override_and_the_executor_keeps_a_core_only_if_one_is_left() {
        let layout = Layout::plan(2, &cores(2), 2);
        assert_eq!(layout.parsers, vec![Some(CoreId { id: 0 }), Some(CoreId { id: 1 })]);
        assert_eq!(layout.executor, None, "both cores hold a parser thread");
        assert!(!layout.may_spin());
        let layout = Layout::plan(1, &cores(4), 4);
        assert_eq!(layout.executor, Some(CoreId { id: 1 }));
    }

    #[test]
    fn without_pinning_nothing_is_pinned_and_the_executor_never_spins() {
        let layout = Layout::plan(0, &[], 8);
        assert_eq!(layout.parsers, vec![None; 7]);
        assert_eq!(layout.executor, None);
        assert!(!layout.may_spin());
    }
}
