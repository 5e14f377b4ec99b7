//! `loadgen`: an open-loop, coordinated-omission-corrected load generator for JSON control
//! planes — the engine, QEMU's QMP monitor, OVS JSON-RPC servers, etcd's HTTP/JSON
//! gateway — with multi-remote
//! failover, verification of every reply, and HdrHistogram reports and plots.
//!
//! ```text
//!  RunConfig ─► run() ─► [embedded engine if no --remote] ─► pre-flight connect
//!                 │
//!                 ├─► driver thread 0..T-1 (own mio loop + timerfd, own connections)
//!                 │     timeline: Send(conn, lane) at intended times ─► Conn::submit
//!                 │     Conn: encode(template, id) ─► socket ─► framer ─► classify
//!                 │           ─► in-flight window (match id, dups) ─► in-band order check (QMP)
//!                 │           ─► Recorder: corrected = recv − intended, service = recv − sent
//!                 │     Rotation: OVS-style remote failover and backoff on drop/failure
//!                 ├─► sampler thread: /proc of the server over the measured window
//!                 └─► merge recorders ─► Run { RunSummary, histograms, interval log }
//!                        ─► table / summary.json / .hgrm / .hlog / .csv / SVG + PNG plot
//! ```
//!
//! Open loop (default): every (connection, lane) has a constant-rate schedule; latency is
//! measured from the *intended* send time, so a stalled server shows up as latency, not as
//! a lower rate (wrk2's correction, with µs timers instead of ms). Closed loop (`depth`)
//! measures peak throughput. The library logs with `tracing` and never prints; the binary
//! (`main.rs`, with its `cli.rs`) owns clap, the progress bar and the subscriber.
//!
//! # Layout
//! - `config`: [`RunConfig`], [`Protocol`], [`Mode`], [`Backoff`] — plain data.
//! - `workload`: [`Lane`]s, `--lane` spec and workload-file parsing, the default mix.
//! - `run`: [`run`] / [`run_with`]: embedded engine, pre-flight, threads, summary.
//! - `embedded`: the in-process engine used when no remote is given.
//! - `driver`: one driver thread's event loop (dispatch of wakes and socket events).
//! - `schedule`: intended send times, catch-up, closed-loop lane mix, the timeline.
//! - `timer`: timerfd for µs wake-ups inside mio.
//! - `conn`: one connection across sessions: handshake, send buffer, order check.
//! - `inflight`: the per-session window of requests awaiting replies.
//! - `stream`: non-blocking TCP / Unix client sockets.
//! - `framer`: splits the byte stream into JSON values or HTTP responses.
//! - `http`: HTTP/1.1 response framing (status line, headers, `Content-Length` body).
//! - `protocol`: QMP / JSON-RPC / echo / etcd request templates and message classification.
//! - `remote`: OVS-style remote rotation and backoff (pure logic).
//! - `server_cost`: the server's CPU, context switches, RSS and fds from `/proc` during the
//!   measured window (`--server-pid`, one or several processes, or the embedded engine's
//!   `engine-*` threads).
//! - `recorder`: histograms, counters, verification, interval log of one thread.
//! - `error_texts`: what error replies said ([`ErrorTexts`]), per lane, with counts.
//! - `live`: [`LiveStats`] for progress displays.
//! - `summary`: [`RunSummary`], the serializable result.
//! - `report`: terminal table, `.hgrm`, `.hlog`, CSV renderings.
//! - `output`: results directory layout and writing.
//! - `plot`: latency-by-percentile plots (SVG, PNG).
//! - `sweep`: the same workload at a series of rates; knee table and latency-vs-throughput
//!   plot.
//! - `merge`: several saved runs (processes, machines) added into one, histograms exactly.
//! - `compare`: side-by-side comparison of saved runs.
//! - `ceiling`: loopback echo server and the ceiling measurement.

mod ceiling;
mod compare;
mod config;
mod conn;
mod driver;
mod embedded;
mod error;
mod error_texts;
mod framer;
mod http;
mod inflight;
mod live;
mod merge;
mod output;
mod plot;
mod protocol;
mod recorder;
mod remote;
mod report;
mod run;
mod schedule;
mod server_cost;
mod stream;
mod summary;
mod sweep;
mod timer;
mod workload;

pub use ceiling::{DEFAULT_CEILING_DEPTH, EchoServer, ceiling_config, measure as measure_ceiling};
pub use compare::{SavedRun, compare, load as load_run};
pub use config::{
    AUTO_SPIN_MAX_CORES, Backoff, DEFAULT_CONNECTIONS, DEFAULT_RATE, Mode, Protocol, RunConfig,
    Spin, parse_start_at,
};
pub use error::Error;
pub use error_texts::{ErrorText, ErrorTexts};
pub use live::{LiveSnapshot, LiveStats, Phase};
pub use merge::merge;
pub use ooblane_wire::Address;
pub use output::default_dir;
pub use plot::Curve;
pub use recorder::{LaneCounts, RemoteCounts, Verification};
pub use report::{fmt_count, fmt_us};
pub use run::{Run, run, run_with};
pub use server_cost::ServerCost;
pub use summary::{Checks, Percentiles, RemoteSummary, RowSummary, RunSummary, SpinUsed};
pub use sweep::{
    DEFAULT_MAX_STEPS, DEFAULT_MIN_ACHIEVED, Sweep, SweepPlan, SweepRates, SweepStep, sweep,
};
pub use workload::{Lane, default_lanes, parse_lane, parse_workload};
