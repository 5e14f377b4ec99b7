//! Command-line interface of the `loadgen` binary (clap lives only here and in `main.rs`).
//!
//! Maps flags onto the library's plain-data [`RunConfig`]; validation of values that clap
//! cannot check happens once in `RunConfig::validate`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use loadgen::{
    Address, Backoff, Lane, Mode, Protocol, RunConfig, Spin, parse_lane, parse_workload,
};

const EXAMPLES: &str = "\
Examples:
  # The main job: in-process engine, default mix (in-band `work` + exec-oob `ping`), 2 s
  # warm-up + 10 s measured, report printed and saved under results/.
  loadgen

  # A running engine, 20k requests/s over 8 connections for 30 s:
  loadgen --remote tcp:127.0.0.1:4444 --rate 20000 -c 8 -d 30s

  # QEMU's own monitor (one QMP client per chardev: one -chardev/-mon pair per connection):
  loadgen -r tcp:127.0.0.1:4444 -c 1 --lane 'name=status,cmd=query-status,rate=1000' \\
          --lane 'name=yank,cmd=yank,oob,args={\"instances\": []},rate=100'

  # An OVS JSON-RPC server (ovsdb-server): 'echo' is answered by every OVS server.
  loadgen -r unix:/var/run/openvswitch/db.sock --protocol jsonrpc --lane cmd=echo,rate=2000

  # etcd through its HTTP/JSON gateway: 1,000 puts/s (key and value base64) over 16
  # keep-alive connections, the CPU and context switches of all three members summed:
  loadgen -r tcp:127.0.0.1:2379 --protocol etcd -c 16 \\
          --lane 'name=put,cmd=/v3/kv/put,args={\"key\":\"bG9hZGdlbg==\",\"value\":\"MQ==\"},rate=1000' \\
          --server-pid 101 --server-pid 102 --server-pid 103

  # Peak throughput (closed loop, 16 outstanding per connection), quoted against the
  # loopback echo ceiling measured with the same shape:
  loadgen --depth 16 --ceiling

  # Failover across three remotes (shuffled, OVS-style backoff), errors expected:
  loadgen -r tcp:127.0.0.1:4444 -r tcp:127.0.0.1:4445 -r unix:/run/e.sock --expect-errors

  # Where is the knee? Double from 2,000/s until p99 passes 5 ms or the rate is not met:
  loadgen sweep --rate 2000 --p99-bound 5ms -d 5s --warmup 1s

  # The server's cost per reply (CPU, context switches, RSS, fds) of a running server:
  loadgen -r tcp:127.0.0.1:4444 --server-pid $(pidof -s engine)

  # Two processes (here or on two machines) with aligned schedules, then one merged report:
  T=$(( $(date +%s) + 5 ))
  loadgen -r tcp:10.0.0.1:4444 --start-at $T -o /tmp/a & loadgen -r tcp:10.0.0.1:4444 --start-at $T -o /tmp/b
  loadgen merge /tmp/a /tmp/b -o /tmp/ab

  # Compare saved runs (ratios per percentile, one overlaid plot):
  loadgen compare results/2026-01-02-030405-a results/2026-01-02-031500-b

Lane spec: comma-separated key=value items:
  name=NAME   label in reports and file names (default: the command)
  cmd=CMD     command (QMP `execute`), method (JSON-RPC) or gateway path (etcd: /v3/kv/put)
  args=JSON   arguments object (QMP), params (JSON-RPC; an object is wrapped in [...]) or
              the request body (etcd: a JSON object, default {})
  oob         send as QMP `exec-oob` (exempt from the in-band order check)
  rate=N      fixed requests/s across all connections, or
  share=W     weight in --rate (open loop) or in the request mix (closed loop), default 1

Exit status: 0 pass, 1 verification failure (duplicates, unknown ids, reordering where checked,
protocol errors; error replies, failed, missing or unsent requests unless --expect-errors)
or a run that could not start, 2 bad usage.";

/// Open-loop, coordinated-omission-corrected load generator for QMP and JSON-RPC servers.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, after_long_help = EXAMPLES, args_conflicts_with_subcommands = true)]
#[command(long_about = "Open-loop, coordinated-omission-corrected load generator for QMP \
(QEMU, the engine), OVS JSON-RPC servers and etcd's HTTP/JSON gateway. Latency is measured from each request's \
intended send time (constant-rate schedule per lane, µs timers), so a stalled server shows \
up as latency, not as a lower rate; service time from the actual send is reported beside it. \
Every reply is matched by id (duplicates, unknown ids, missing replies are errors); \
in-band reply order per connection is checked where the protocol promises it (QMP); \
HTTP replies (etcd) carry no id and answer the oldest request outstanding on their \
connection. With no --remote, an in-process engine is started and loaded.")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print saved runs side by side (ratios to the first) and write one overlaid plot.
    Compare(CompareArgs),
    /// Measure only the loopback echo ceiling for the given connections, depth and lanes.
    Ceiling(Box<RunArgs>),
    /// Run the same workload at a series of rates (--rates, or doubling from --rate until
    /// the server saturates); each step is a normal run folder under --out, plus a knee
    /// table (sweep.md, sweep.txt) and a latency-vs-throughput plot (sweep.svg/png).
    Sweep(Box<SweepArgs>),
    /// Add saved runs (e.g. several processes started with the same --start-at) into one
    /// run folder: HdrHistogram addition of their saved histograms (exact, never averaged
    /// percentiles), summed verification and connection counts, the usual report and plot.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MergeArgs {
    /// Run directories (each with summary.json, histograms.hlog and intervals.hlog).
    #[arg(required = true, num_args = 2..)]
    pub(crate) runs: Vec<PathBuf>,
    /// Where to write the merged run [default: results/DATE-<label>-merged].
    #[arg(short, long)]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct SweepArgs {
    /// Total rates to run, e.g. 1000,2000,5000 (every one is run). Default: double from
    /// --rate until saturated or --max-steps.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub(crate) rates: Vec<f64>,
    /// Most steps of a doubling sweep.
    #[arg(long, default_value_t = loadgen::DEFAULT_MAX_STEPS)]
    pub(crate) max_steps: usize,
    /// A step is saturated when some lane's corrected p99 passes this...
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub(crate) p99_bound: Duration,
    /// ...or when the achieved rate falls below this share of the target.
    #[arg(long, default_value_t = loadgen::DEFAULT_MIN_ACHIEVED)]
    pub(crate) min_achieved: f64,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

impl SweepArgs {
    pub(crate) fn plan(&self) -> loadgen::SweepPlan {
        loadgen::SweepPlan {
            rates: if self.rates.is_empty() {
                loadgen::SweepRates::Doubling { start: self.run.rate, max_steps: self.max_steps }
            } else {
                loadgen::SweepRates::List(self.rates.clone())
            },
            p99_bound: self.p99_bound,
            min_achieved: self.min_achieved,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// Run directories (each with summary.json and <lane>.hgrm), the first is the baseline.
    #[arg(required = true, num_args = 2..)]
    pub(crate) runs: Vec<PathBuf>,
    /// Where to write compare.txt, compare.svg and compare.png [default: results/DATE-compare].
    #[arg(short, long)]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ProtocolArg {
    /// QMP (QEMU monitor, the engine); negotiates `oob` when offered.
    Qmp,
    /// JSON-RPC 1.0 as Open vSwitch speaks it.
    Jsonrpc,
    /// etcd's HTTP/JSON gateway: each lane POSTs its args (the JSON body) to its cmd (a
    /// path such as /v3/kv/put) on keep-alive HTTP/1.1 connections; a reply must be a 2xx
    /// with a JSON object body (Content-Length framed), anything else is an error reply.
    Etcd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SpinArg {
    /// Off for a local server on a machine with at most 4 cores, on otherwise.
    Auto,
    /// Always spin before a send is due.
    On,
    /// Never spin; sleep until the timer fires.
    Off,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Server to load, `tcp:HOST:PORT` or `unix:PATH`; repeat for failover (each connection
    /// shuffles the list and moves on when a remote drops). None: start an embedded engine.
    #[arg(short, long = "remote", value_name = "ADDR")]
    pub(crate) remotes: Vec<Address>,
    /// Wire protocol of the remotes.
    #[arg(long, value_enum, default_value = "qmp")]
    pub(crate) protocol: ProtocolArg,
    /// A lane of traffic (repeatable), e.g. 'name=work,cmd=work,args={"us":50},rate=5000'.
    /// Default: work (share 9, {"us":20}) + exec-oob ping (share 1).
    #[arg(short, long = "lane", value_name = "SPEC", value_parser = parse_lane)]
    pub(crate) lanes: Vec<Lane>,
    /// JSON workload file: {"lanes": [{"name":..,"cmd":..,"args":{..},"oob":bool,"rate":N}]}.
    #[arg(short, long, value_name = "FILE", conflicts_with = "lanes")]
    pub(crate) workload: Option<PathBuf>,
    /// Total requests/s shared by lanes without their own rate (open loop).
    #[arg(long, default_value_t = loadgen::DEFAULT_RATE)]
    pub(crate) rate: f64,
    /// Client connections.
    #[arg(short, long, default_value_t = loadgen::DEFAULT_CONNECTIONS)]
    pub(crate) connections: usize,
    /// Driver threads (each an event loop over a share of the connections).
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// Measured duration, e.g. 10s, 1m30s, 500ms.
    #[arg(short, long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Warm-up before measuring (sent, verified, not recorded).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// How long to wait for outstanding replies at the end before counting them missing.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) drain: Duration,
    /// Closed loop: keep N requests outstanding per connection, as fast as possible
    /// (peak throughput; latency is then service time).
    #[arg(long, value_name = "N")]
    pub(crate) depth: Option<usize>,
    /// First reconnect backoff after the free tries (one per remote).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) backoff_min: Duration,
    /// Backoff cap (doubling from --backoff-min).
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    pub(crate) backoff_max: Duration,
    /// Give up on a connect attempt after this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// Interval log period.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,
    /// Try the remotes in the order given instead of shuffling them per connection.
    #[arg(long)]
    pub(crate) no_shuffle: bool,
    /// Seed for the remote shuffle (default: random).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Error replies and failed/missing requests do not fail the run (e.g. failover tests).
    #[arg(long)]
    pub(crate) expect_errors: bool,
    /// Check that in-band replies come back in request order on each connection even where
    /// the protocol does not promise it (default: only for QMP, which promises it; JSON-RPC
    /// servers such as ovsdb-server answer out of order by design). Ids are always matched.
    #[arg(long, overrides_with = "no_verify_order")]
    pub(crate) verify_order: bool,
    /// Do not check in-band reply order, even for QMP (ids are still matched: duplicates,
    /// unknown ids and missing replies stay errors).
    #[arg(long, overrides_with = "verify_order")]
    pub(crate) no_verify_order: bool,
    /// Early-wake spin of the driver threads: the timer is armed early by the learned wake-up
    /// latency (at most 200 µs) and the rest is spun, which keeps send lag in the µs but
    /// takes a core. auto = off when the server is local (embedded, loopback or unix
    /// remote) and the machine has at most 4 cores, on otherwise. The report says which
    /// was used.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) spin: SpinArg,
    /// Wall-clock time zero of the schedules, RFC 3339 (2026-01-02T03:04:05Z) or unix
    /// seconds: several loadgen processes (on one or several machines with synchronised
    /// clocks) given the same time run aligned schedules, warm-ups and interval logs, for
    /// `loadgen merge`. Connections are made first; if the time has passed, the run starts
    /// at once (with a warning).
    #[arg(long, value_name = "TIME", value_parser = |s: &str| loadgen::parse_start_at(s))]
    pub(crate) start_at: Option<std::time::SystemTime>,
    /// Sample this server process from /proc during the measured window (after warm-up) and
    /// report its cost: CPU µs per reply (ns from /proc/PID/task/*/schedstat, utime+stime
    /// ticks where the kernel has no schedstat), context switches per 1,000 replies (summed
    /// over /proc/PID/task/*/status), peak RSS (sampled VmRSS; VmHWM beside it) and peak
    /// open fds. Repeat it for a cluster: the members' figures are summed. Automatic for
    /// the embedded engine (no --remote), where only its engine-* threads are counted for
    /// CPU and switches, not loadgen's own.
    #[arg(long = "server-pid", value_name = "PID")]
    pub(crate) server_pids: Vec<u32>,
    /// Also measure the loopback echo ceiling (same connections, depth, requests) first and
    /// quote throughput as a fraction of it.
    #[arg(long)]
    pub(crate) ceiling: bool,
    /// Label for the results directory and report.
    #[arg(long, default_value = "run")]
    pub(crate) label: String,
    /// Results directory [default: results/<YYYY-MM-DD>-<HHMMSS>-<label>, UTC].
    #[arg(short, long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Do not write a results directory.
    #[arg(long, conflicts_with = "out")]
    pub(crate) no_save: bool,
    /// Print summary JSON on stdout instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
}

impl RunArgs {
    /// The library configuration these flags describe.
    pub(crate) fn to_config(&self) -> anyhow::Result<RunConfig> {
        let lanes = match (&self.workload, self.lanes.is_empty()) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read workload {}: {e}", path.display()))?;
                parse_workload(&text)?
            }
            (None, false) => self.lanes.clone(),
            (None, true) => loadgen::default_lanes(),
        };
        let config = RunConfig {
            remotes: self.remotes.clone(),
            protocol: match self.protocol {
                ProtocolArg::Qmp => Protocol::Qmp,
                ProtocolArg::Jsonrpc => Protocol::JsonRpc,
                ProtocolArg::Etcd => Protocol::Etcd,
            },
            lanes,
            rate: self.rate,
            connections: self.connections,
            threads: self.threads,
            warmup: self.warmup,
            duration: self.duration,
            drain: self.drain,
            mode: self.depth.map_or(Mode::Open, |depth| Mode::Closed { depth }),
            backoff: Backoff { min: self.backoff_min, max: self.backoff_max },
            connect_timeout: self.connect_timeout,
            shuffle_remotes: !self.no_shuffle,
            seed: self.seed,
            expect_errors: self.expect_errors,
            verify_order: match (self.verify_order, self.no_verify_order) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            server_pids: self.server_pids.clone(),
            start_at: self.start_at,
            spin: match self.spin {
                SpinArg::Auto => Spin::Auto,
                SpinArg::On => Spin::On,
                SpinArg::Off => Spin::Off,
            },
            interval: self.interval,
            label: self.label.clone(),
        };
        config.validate()?;
        Ok(config)
    }
}
