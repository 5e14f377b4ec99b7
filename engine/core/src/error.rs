//! The crate-boundary error: what can go wrong starting, running or stopping a server.
//!
//! Request-level failures are not here: they are replies (`CommandError`) or flow-control
//! states, never Rust errors.

use std::io;

use ooblane_wire::{Address, AddressError};

/// Errors returned by the engine's public API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address string did not parse.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address that failed.
        address: Address,
        /// The underlying OS error.
        source: io::Error,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A thread or event loop could not be created.
    #[error("cannot start the server: {0}")]
    Start(#[source] io::Error),
}
