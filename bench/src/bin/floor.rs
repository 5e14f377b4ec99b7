//! The physical floor of a commit on this machine, for the results suite to quote latencies
//! against: how long the disk takes to make a small write durable, and how long a small
//! message takes to cross loopback TCP and come back.
//!
//! - **fdatasync, overwrite**: a small `pwrite` into a preallocated, already synced file,
//!   then `fdatasync`: only the data block is flushed (what a log that preallocates its
//!   segments, as etcd's WAL does, pays per commit).
//! - **fdatasync, append**: a small write at the end of a growing file, then `fdatasync`:
//!   the new size is metadata, so the filesystem's journal commits too (what a log that
//!   grows its file pays).
//! - **loopback round trip**: a small message over a `TCP_NODELAY` connection on 127.0.0.1
//!   to a thread that echoes it, both sides sleeping in blocking reads (so each trip includes
//!   two wake-ups, as a server's does).
//!
//! Each fdatasync kind is timed `--count` times (round trips three times as often) after a
//! short warm-up, and reported as min, p50, p90, p99, max and mean in µs, as JSON on stdout.
//! The files live in a fresh directory under `DIR` (give the directory the data directories
//! use: same disk, same filesystem) and are removed. `results/tools/commit_latency.py` runs
//! it before and after its systems.
//!
//! ```text
//! floor DIR [--count N] [--size BYTES]   (defaults: 2000 syncs of each kind, 6000 trips, 64 B)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Default samples of each fdatasync kind: about half a second at 0.2 ms each, and enough
/// that p99 rests on 20 samples.
const DEFAULT_SYNCS: usize = 2000;

/// Round trips per fdatasync sample: they are cheap (tens of µs), so more samples steady
/// the tail at little cost.
const ROUND_TRIPS_PER_SYNC: usize = 3;

/// Default message and write size: a small command, as `counter-add` or an etcd put is.
const DEFAULT_SIZE: usize = 64;

/// Iterations run first and not recorded: page cache, journal and socket buffers warm up.
const WARMUP: usize = 50;

/// Size of the preallocated file the overwrites cycle through: large enough that the writes
/// do not always hit one block, small enough to create in a moment.
const PREALLOCATED: u64 = 1 << 20;

/// Command-line arguments.
#[derive(Debug)]
struct Args {
    dir: PathBuf,
    count: usize,
    size: usize,
}

#[allow(clippy::print_stdout, reason = "the JSON report on stdout is the interface scripts read")]
fn main() -> io::Result<()> {
    let args = parse_args(std::env::args().skip(1)).map_err(|why| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{why}\nusage: floor DIR [--count N] [--size BYTES]"),
        )
    })?;
    let work = args.dir.join(format!("floor-{}", std::process::id()));
    fs::create_dir(&work)?;
    let result = measure(&args, &work);
    fs::remove_dir_all(&work)?;
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    Ok(())
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args { dir: PathBuf::new(), count: DEFAULT_SYNCS, size: DEFAULT_SIZE };
    while let Some(arg) = it.next() {
        let mut number = |name: &str| {
            it.next()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .ok_or(format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--count" => args.count = number("--count")?,
            "--size" => args.size = number("--size")?,
            dir if args.dir.as_os_str().is_empty() && !dir.starts_with('-') => {
                args.dir = dir.into()
            }
            other => return Err(format!("unexpected argument '{other}'")),
        }
    }
    if args.dir.as_os_str().is_empty() {
        return Err("DIR is required".into());
    }
    Ok(args)
}

/// Runs the three measurements.
fn measure(args: &Args, work: &Path) -> io::Result<Value> {
    let overwrite = fdatasync_overwrite(work, args)?;
    let append = fdatasync_append(work, args)?;
    let round_trip = loopback_round_trip(args)?;
    Ok(json!({
        "dir": args.dir,
        "size_bytes": args.size,
        "fdatasync_overwrite": summary(overwrite),
        "fdatasync_append": summary(append),
        "loopback_round_trip": summary(round_trip),
    }))
}

/// `pwrite` + `fdatasync` into a preallocated, synced file.
fn fdatasync_overwrite(work: &Path, args: &Args) -> io::Result<Vec<Duration>> {
    let file = File::create(work.join("overwrite"))?;
    file.set_len(0)?;
    let zeros = vec![0u8; PREALLOCATED as usize];
    file.write_all_at(&zeros, 0)?;
    file.sync_all()?;
    let block = vec![0x5au8; args.size];
    let slots = (PREALLOCATED / args.size as u64).max(1);
    timed(args.count, |i| {
        file.write_all_at(&block, (i as u64 % slots) * args.size as u64)?;
        file.sync_data()
    })
}

/// Append + `fdatasync` on a growing file.
fn fdatasync_append(work: &Path, args: &Args) -> io::Result<Vec<Duration>> {
    let mut file = OpenOptions::new().create_new(true).append(true).open(work.join("append"))?;
    let block = vec![0xa5u8; args.size];
    timed(args.count, |_| {
        file.write_all(&block)?;
        file.sync_data()
    })
}

/// A small message to an echo thread over loopback TCP and back.
fn loopback_round_trip(args: &Args) -> io::Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let size = args.size;
    let echo = thread::spawn(move || -> io::Result<()> {
        let mut buf = vec![0u8; size];
        while server.read_exact(&mut buf).is_ok() {
            server.write_all(&buf)?;
        }
        Ok(())
    });
    let (message, mut back) = (vec![0x42u8; size], vec![0u8; size]);
    let samples = timed(args.count * ROUND_TRIPS_PER_SYNC, |_| {
        client.write_all(&message)?;
        client.read_exact(&mut back)
    });
    drop(client);
    echo.join().map_err(|_| io::Error::other("echo thread panicked"))??;
    samples
}

/// Runs `op` `WARMUP + count` times; returns the last `count` durations.
fn timed(count: usize, mut op: impl FnMut(usize) -> io::Result<()>) -> io::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(count);
    for i in 0..WARMUP + count {
        let start = Instant::now();
        op(i)?;
        if i >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    Ok(samples)
}

/// Exact percentiles (nearest rank) of the samples, in µs.
fn summary(mut samples: Vec<Duration>) -> Value {
    samples.sort_unstable();
    let us = |d: Duration| (d.as_nanos() as f64 / 1e3 * 10.0).round() / 10.0;
    let rank =
        |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    json!({
        "count": samples.len(),
        "min_us": us(samples[0]),
        "p50_us": us(rank(0.5)),
        "p90_us": us(rank(0.9)),
        "p99_us": us(rank(0.99)),
        "max_us": us(samples[samples.len() - 1]),
        "mean_us": us(mean),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments_and_their_errors() {
        let a = args(&["/d", "--count", "7", "--size", "9"]).unwrap();
        assert_eq!((a.dir, a.count, a.size), (PathBuf::from("/d"), 7, 9));
        assert_eq!(args(&["/d"]).unwrap().count, DEFAULT_SYNCS);
        assert!(args(&[]).unwrap_err().contains("DIR"));
        assert!(args(&["/d", "--count", "0"]).unwrap_err().contains("positive"));
        assert!(args(&["/d", "/e"]).unwrap_err().contains("'/e'"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples = (1..=100).rev().map(Duration::from_micros).collect();
        let s = summary(samples);
        assert_eq!((s["p50_us"].as_f64(), s["p99_us"].as_f64()), (Some(50.0), Some(99.0)));
        assert_eq!((s["min_us"].as_f64(), s["max_us"].as_f64()), (Some(1.0), Some(100.0)));
        assert_eq!((s["count"].as_u64(), s["mean_us"].as_f64()), (Some(100), Some(50.5)));
    }

    #[test]
    fn measures_all_three_in_a_directory_and_cleans_up() {
        let dir = std::env::temp_dir();
        let a = Args { dir: dir.clone(), count: 3, size: 16 };
        let work = dir.join(format!("floor-test-{}", std::process::id()));
        fs::create_dir(&work).unwrap();
        let report = measure(&a, &work);
        fs::remove_dir_all(&work).unwrap();
        let report = report.unwrap();
        for key in ["fdatasync_overwrite", "fdatasync_append"] {
            assert_eq!(report[key]["count"], 3, "{report}");
        }
        assert_eq!(report["loopback_round_trip"]["count"], 3 * ROUND_TRIPS_PER_SYNC as u64);
        assert!(report["loopback_round_trip"]["p50_us"].as_f64().unwrap() > 0.0);
    }
}
