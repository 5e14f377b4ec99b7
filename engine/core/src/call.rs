//! A decoded in-band call: the command's typed arguments travel to the executor and its typed
//! result travels back in the same reusable object, so the in-band path allocates nothing per
//! request once warm (for commands whose arguments and results own no heap memory).
//!
//! A parser thread decodes arguments into a [`BoxedCall`] taken from its [`CallPool`] (one
//! free list per command), the executor [`Call::run`]s it, and the parser thread that sent it
//! writes the reply from it and puts it back in the pool. Only the thread that owns a pool
//! touches it; a call is on exactly one thread at a time.

use std::any::Any;
use std::sync::Arc;

use ooblane_wire::reply::{self, ReplyTo};
use ooblane_wire::{CommandError, ErrorClass};
use serde::Serialize;

use crate::exec::Exec;

/// A call in flight between a parser thread and the executor, types erased.
pub(crate) trait Call<S, V>: Send {
    /// Executor: runs the handler on the arguments stored by the parser thread and keeps its
    /// result.
    fn run(&mut self, exec: &mut Exec<'_, S, V>);
    /// Executor: records a failure instead of a result (the handler panicked).
    fn fail(&mut self, err: CommandError);
    /// Parser thread: writes the reply for the kept result, leaving the call empty for reuse.
    fn write_reply(&mut self, out: &mut Vec<u8>, to: &ReplyTo);
    /// Parser thread: the class of the kept result if it is an error (for the metrics).
    fn failure(&self) -> Option<ErrorClass>;
    /// The command's registration index: which free list the call goes back to.
    fn command(&self) -> usize;
    /// Executor, durable and cluster modes: the stored arguments as JSON if the command is
    /// replicated; `None` for a command that runs on this member only.
    fn log_args(&self) -> Option<String>;
    /// For refilling a reused call with new arguments of its own type.
    fn as_any(&mut self) -> &mut dyn Any;
}

/// A call with its arguments, as the job queue carries it.
pub(crate) type BoxedCall<S, V> = Box<dyn Call<S, V>>;

/// Free calls kept per command: enough to cover the in-flight limits of a busy thread, few
/// enough that a burst does not pin much memory (a call is a few dozen bytes).
const KEEP_PER_COMMAND: usize = 1024;

/// A parser thread's reusable calls, one free list per registered command.
pub(crate) struct CallPool<S, V> {
    free: Vec<Vec<BoxedCall<S, V>>>,
}

impl<S, V> std::fmt::Debug for CallPool<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let free: usize = self.free.iter().map(Vec::len).sum();
        f.debug_struct("CallPool").field("free", &free).finish()
    }
}

impl<S, V> CallPool<S, V> {
    pub(crate) fn new(commands: usize) -> Self {
        CallPool { free: (0..commands).map(|_| Vec::new()).collect() }
    }

    /// The free list of command `index`, for its `prepare`.
    pub(crate) fn free_list(&mut self, index: usize) -> &mut Vec<BoxedCall<S, V>> {
        &mut self.free[index]
    }

    /// Takes back a call whose reply has been written.
    pub(crate) fn recycle(&mut self, call: BoxedCall<S, V>) {
        let free = &mut self.free[call.command()];
        if free.len() < KEEP_PER_COMMAND {
            free.push(call);
        }
    }
}

/// Encodes a replicated command's arguments for the log.
pub(crate) type LogArgs<A> = fn(&A) -> String;

/// The [`LogArgs`] of every replicated command: JSON, as the wire carries arguments.
pub(crate) fn encode_json<A: Serialize>(args: &A) -> String {
    // Serializing a derived `Serialize` type into a `String` cannot fail but for a map with
    // non-string keys, which `Deserialize` from JSON could not have produced.
    serde_json::to_string(args).unwrap_or_else(|_| "{}".to_owned())
}

/// The typed call of one command: `H` is its in-band handler.
pub(crate) struct TypedCall<A, R, H> {
    command: usize,
    handler: Arc<H>,
    /// Replicated commands only.
    log: Option<LogArgs<A>>,
    /// Set by the parser thread, taken by `run`.
    args: Option<A>,
    /// Set by `run` (or `fail`), taken by `write_reply`.
    outcome: Option<Result<R, CommandError>>,
}

impl<A: 'static, R: 'static, H: 'static> TypedCall<A, R, H> {
    /// A call of `command` with `args`, reusing one from `free` if there is one.
    pub(crate) fn prepare<S, V>(
        command: usize,
        handler: &Arc<H>,
        log: Option<LogArgs<A>>,
        args: A,
        free: &mut Vec<BoxedCall<S, V>>,
    ) -> BoxedCall<S, V>
    where
        Self: Call<S, V>,
    {
        let mut call = free.pop().unwrap_or_else(|| {
            Box::new(TypedCall::<A, R, H> {
                command,
                handler: Arc::clone(handler),
                log,
                args: None,
                outcome: None,
            })
        });
        let typed = call.as_any().downcast_mut::<Self>().expect("a free list holds its own calls");
        typed.args = Some(args);
        call
    }
}

impl<S, V, A, R, H> Call<S, V> for TypedCall<A, R, H>
where
    A: Send + 'static,
    R: Serialize + Send + 'static,
    H: Fn(&mut Exec<'_, S, V>, A) -> Result<R, CommandError> + Send + Sync + 'static,
{
    fn run(&mut self, exec: &mut Exec<'_, S, V>) {
        let args = self.args.take().expect("a prepared call holds its arguments");
        self.outcome = Some((self.handler)(exec, args));
    }

    fn fail(&mut self, err: CommandError) {
        self.args = None;
        self.outcome = Some(Err(err));
    }

    fn write_reply(&mut self, out: &mut Vec<u8>, to: &ReplyTo) {
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Err(CommandError::generic("the command was never run (internal error)"))
        });
        reply::outcome(out, to, &outcome);
    }

    fn failure(&self) -> Option<ErrorClass> {
        match &self.outcome {
            Some(Err(err)) => Some(err.class),
            _ => None,
        }
    }

    fn command(&self) -> usize {
        self.command
    }

    fn log_args(&self) -> Option<String> {
        Some((self.log?)(self.args.as_ref()?))
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}
