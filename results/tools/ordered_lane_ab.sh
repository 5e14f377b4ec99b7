#!/usr/bin/env bash
# The ordered lane, old design against new, side by side in one sitting: in-band and OOB
# `ping` throughput with the server's CPU per reply and context switches per 1,000 replies
# (loadgen --server-pid, from /proc), against a naive tokio + serde_json QMP server, and OOB
# isolation (service time, send to reply) with the executor idle and saturated, over several
# fresh probe connections, the worst one reported.
#
# Usage: results/tools/ordered_lane_ab.sh OUT_DIR OLD_ENGINE [REPS]
#   OLD_ENGINE: the server binary built from the previous design, e.g. before the crate split
#   (da23fcf and earlier: the binary is `engine`, in package `ooblane`):
#     git worktree add --detach /tmp/old <commit> && (cd /tmp/old && cargo build --release -p ooblane)
#   Needs target/release/{ooblane,loadgen,naive-qmp}
#   (cargo build --release -p ooblane-server -p loadgen && cargo build --release -p bench --bins).
# Every client sleeps between sends (loadgen --spin off: timer slack 1 ns, no early-wake
# spin), so no client busy-waits on the cores the servers need.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: ordered_lane_ab.sh OUT_DIR OLD_ENGINE [REPS]}
old=${2:?usage: ordered_lane_ab.sh OUT_DIR OLD_ENGINE [REPS]}
reps=${3:-3}
new=target/release/ooblane
naive=target/release/naive-qmp
loadgen=target/release/loadgen
probes=4
mkdir -p "$out"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
log() { echo "$*" >>"$out/commands.txt"; }
source results/tools/helpers.sh

server_pid="" server_addr=""
start() { # binary args...
    local bin=$1 port; shift
    port=$(free_port)
    log "$bin --qmp tcp:127.0.0.1:$port $*"
    if [[ $bin == "$naive" ]]; then
        "$bin" "tcp:127.0.0.1:$port" >>"$out/servers.log" 2>&1 &
    else
        "$bin" --qmp "tcp:127.0.0.1:$port" "$@" >>"$out/servers.log" 2>&1 &
    fi
    server_pid=$!; pids+=("$server_pid")
    server_addr=tcp:127.0.0.1:$port
    wait_listen "$port"
}
stop() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }

# Closed loop, 4 connections x depth 64, 3 s after 1 s of warm-up.
throughput() { # name lane
    local dir=$out/throughput/$1
    log "$loadgen -r $server_addr --depth 64 -c 4 --lane '$2' -d 3s --warmup 1s --spin off --server-pid $server_pid -o $dir"
    "$loadgen" -r "$server_addr" --depth 64 -c 4 --lane "$2" -d 3s --warmup 1s --spin off \
        --server-pid "$server_pid" -o "$dir" >"$dir.txt" 2>&1 || echo "FAILED: $dir" >&2
}

# One server configuration, both lanes, `reps` times (fresh server each time).
config() { # label binary args...
    local label=$1; shift
    for rep in $(seq "$reps"); do
        start "$@"
        throughput "$label-inband-r$rep" 'name=ping,cmd=ping'
        throughput "$label-oob-r$rep" 'name=ping,cmd=ping,oob'
        stop
    done
}

# OOB ping at 2,000/s from `probes` fresh connections in turn, (a) idle, (b) with the
# executor saturated by a closed-loop `work {"us":20}` client on another connection.
isolation() { # label binary args...
    local label=$1; shift
    start "$@"
    for case in a-idle b-saturated; do
        local sat=""
        if [[ $case == b-saturated ]]; then
            log "$loadgen -r $server_addr -c 1 --depth 16 --lane 'name=work,cmd=work,args={\"us\":20}' -d $((probes * 5 + 4))s --warmup 0s --spin off --no-save &"
            "$loadgen" -r "$server_addr" -c 1 --depth 16 --lane 'name=work,cmd=work,args={"us":20}' \
                -d "$((probes * 5 + 4))s" --warmup 0s --spin off --no-save >"$out/isolation/$label-saturator.txt" 2>&1 &
            sat=$!; pids+=("$sat"); sleep 1
        fi
        for probe in $(seq "$probes"); do
            local dir=$out/isolation/$label-$case-p$probe
            log "$loadgen -r $server_addr -c 1 --lane name=oob,cmd=ping,oob,rate=2000 -d 4s --warmup 500ms --spin off -o $dir"
            "$loadgen" -r "$server_addr" -c 1 --lane 'name=oob,cmd=ping,oob,rate=2000' -d 4s \
                --warmup 500ms --spin off -o "$dir" >"$dir.txt" 2>&1 || echo "FAILED: $dir" >&2
        done
        if [[ -n $sat ]]; then wait "$sat" || true; fi
    done
    stop
}

mkdir -p "$out/throughput" "$out/isolation"
{
    echo "commit=$(git rev-parse HEAD)$(git diff --quiet || echo ' (dirty)')"
    echo "old_engine=$old ($("$old" --version 2>/dev/null || echo '?'))"
    echo "rustc=$(rustc -V)"
    echo "cpu=$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, kernel $(uname -r)"
    echo "load_at_start=$(cat /proc/loadavg)"
    echo "started=$(date -u +%FT%TZ)"
} >"$out/machine.txt"

threads=$(nproc)
config old-default "$old"
config new-default "$new"
config old-t1 "$old" --threads 1
config new-t1 "$new" --threads 1
config old-t$threads "$old" --threads "$threads"
config new-t$threads "$new" --threads "$threads"
config naive "$naive"
isolation old-default "$old"
isolation new-default "$new"
echo "finished=$(date -u +%FT%TZ)" >>"$out/machine.txt"
python3 results/tools/ordered_lane_summary.py "$out" "$reps" "$probes" | tee "$out/summary.md"
