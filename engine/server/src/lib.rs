//! The `ooblane` server: the binary's parts, as a library so that tests and other programs can
//! reuse them. The binary (`src/main.rs`) serves the demo command set with them.
//!
//! # Layout
//! - [`cli`]: the command line and how it maps onto the server's and the log's configuration.
//! - [`metrics`]: the Prometheus / OpenMetrics endpoint (`--metrics tcp:HOST:PORT`), read at
//!   scrape time from the server's statistics.
//! - [`trim`]: gives memory the server freed back to the system (glibc).

pub mod cli;
pub mod metrics;
pub mod trim;
