//! The crate-boundary error of the loadgen library.
//!
//! Only set-up and I/O around a run are errors. What goes wrong *during* a run (error
//! replies, dropped connections, duplicates, reordering) is measured and reported in the
//! run's verification counters, never returned as an `Err`.

use std::io;
use std::path::PathBuf;

/// Errors returned by the loadgen library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `--lane` spec or workload file entry is malformed.
    #[error("bad lane spec '{spec}': {why}")]
    Lane {
        /// The text as given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// The run configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No remote accepted a connection during the pre-flight check.
    #[error("no remote is reachable:\n{0}")]
    Unreachable(String),
    /// The server broke the protocol in a way that makes measuring pointless.
    #[error("{remote}: {why}")]
    Handshake {
        /// The remote that misbehaved.
        remote: String,
        /// What it did.
        why: String,
    },
    /// The embedded engine did not start.
    #[error("cannot start the embedded engine: {0}")]
    Engine(String),
    /// Reading or writing a file or socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// A saved run directory is missing files or holds unparsable data.
    #[error("cannot read run {path}: {why}")]
    RunDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Drawing a plot failed.
    #[error("cannot draw {path}: {why}")]
    Plot {
        /// The output file.
        path: PathBuf,
        /// The backend's message.
        why: String,
    },
}

impl Error {
    /// Wraps an I/O error with what was being attempted.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
