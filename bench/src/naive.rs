//! The obvious alternatives the benchmarks compare the engine with, where no crate provides
//! one: the framer a first version would write (one byte at a time through a state machine)
//! and an executor round trip over `std::sync::mpsc` (a channel each way, a blocking `recv`
//! on each side instead of the engine's mailbox and wake-only-if-asleep protocol).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

/// Counts the top-level values in `buf` by walking it byte by byte: depth of `{}`/`[]`
/// outside strings, `\` escapes inside them. Agrees with the engine's framer on valid JSON
/// object streams (which is all the benchmark feeds it).
pub fn count_frames(buf: &[u8]) -> usize {
    let (mut depth, mut frames) = (0u32, 0);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in buf {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                frames += usize::from(depth == 0);
            }
            _ => {}
        }
    }
    frames
}

/// A job as the engine's no-op job is: a boxed closure run on the executor thread.
type MpscJob = Box<dyn FnOnce() -> u64 + Send>;

/// An executor thread fed by `std::sync::mpsc`, answering on a second channel.
#[derive(Debug)]
pub struct MpscHandoff {
    jobs: Option<Sender<MpscJob>>,
    replies: Receiver<u64>,
    executor: Option<JoinHandle<()>>,
}

impl MpscHandoff {
    /// Starts the executor thread.
    pub fn start() -> MpscHandoff {
        let (jobs, job_rx) = channel::<MpscJob>();
        let (reply_tx, replies) = channel();
        let executor = std::thread::spawn(move || {
            for job in job_rx {
                if reply_tx.send(job()).is_err() {
                    break;
                }
            }
        });
        MpscHandoff { jobs: Some(jobs), replies, executor: Some(executor) }
    }

    /// Sends `batch` no-op jobs, then blocks until all their replies are back.
    pub fn round_trip(&mut self, batch: usize) {
        let jobs = self.jobs.as_ref().expect("running");
        for _ in 0..batch {
            jobs.send(Box::new(|| 0)).expect("executor runs");
        }
        for _ in 0..batch {
            self.replies.recv().expect("executor answers");
        }
    }
}

impl Drop for MpscHandoff {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(executor) = self.executor.take() {
            let _ = executor.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_framer_counts_objects_with_tricky_strings() {
        let stream = br#"{"a":"}\"{"} [1,[2]]{"b":"\\"}"#;
        assert_eq!(count_frames(stream), 3);
    }

    #[test]
    fn mpsc_round_trips() {
        let mut handoff = MpscHandoff::start();
        handoff.round_trip(1);
        handoff.round_trip(64);
    }
}
