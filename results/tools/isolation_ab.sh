#!/usr/bin/env bash
# OOB isolation across engine configurations, on the machine as a user would run it (no
# taskset): OOB `ping` at 2,000/s on one connection (a) with the executor idle and (b) with
# it saturated by a separate closed-loop client (`work {"us":100}`, depth 8), for the default
# parser threads, `--threads 1` (executor on a core of its own) and `--executor-nice 19`.
# Usage: results/tools/isolation_ab.sh OUT_DIR   (needs target/release/{ooblane,loadgen}:
#   cargo build --release -p ooblane-server -p loadgen)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: isolation_ab.sh OUT_DIR}
mkdir -p "$out"
engine=target/release/ooblane
loadgen=target/release/loadgen
port=4481
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
log() { echo "$*" | tee -a "$out/commands.txt"; }

one() { # config-name engine-args...
    local name=$1; shift
    log "$engine --qmp tcp:127.0.0.1:$port $*"
    $engine --qmp tcp:127.0.0.1:$port "$@" >"$out/$name.engine.log" 2>&1 & pids+=($!)
    local engine_pid=$!
    sleep 0.5
    log "$loadgen -r tcp:127.0.0.1:$port -c 1 --lane name=oob,cmd=ping,oob,rate=2000 -d 8s --warmup 1s -o $out/$name-a-idle"
    $loadgen -r tcp:127.0.0.1:$port -c 1 --lane 'name=oob,cmd=ping,oob,rate=2000' -d 8s --warmup 1s \
        -o "$out/$name-a-idle" >"$out/$name-a-idle.txt" 2>&1
    log "$loadgen -r tcp:127.0.0.1:$port -c 1 --depth 8 --lane 'name=work,cmd=work,args={\"us\":100}' -d 12s --warmup 0s --no-save &"
    $loadgen -r tcp:127.0.0.1:$port -c 1 --depth 8 --lane 'name=work,cmd=work,args={"us":100}' \
        -d 12s --warmup 0s --no-save >"$out/$name-b-saturator.txt" 2>&1 &
    local saturator=$!
    sleep 1
    log "$loadgen -r tcp:127.0.0.1:$port -c 1 --lane name=oob,cmd=ping,oob,rate=2000 -d 8s --warmup 1s -o $out/$name-b-saturated"
    $loadgen -r tcp:127.0.0.1:$port -c 1 --lane 'name=oob,cmd=ping,oob,rate=2000' -d 8s --warmup 1s \
        -o "$out/$name-b-saturated" >"$out/$name-b-saturated.txt" 2>&1
    wait "$saturator"
    kill "$engine_pid"; wait "$engine_pid" 2>/dev/null || true
}

{
    echo "commit: $(git rev-parse HEAD)$(git diff --quiet || echo ' (dirty)')"
    rustc -V
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, kernel $(uname -r)"
    echo "load at start: $(cat /proc/loadavg)"
} >"$out/machine.txt"
one default
one threads1 --threads 1
one nice19 --executor-nice 19

{
    printf '| config | case | p50 | p90 | p99 | p99.9 | max | service p99.9 | send lag p99.9 |\n'
    printf '|---|---|---:|---:|---:|---:|---:|---:|---:|\n'
    for run in "$out"/*-a-idle "$out"/*-b-saturated; do
        name=$(basename "$run")
        awk -v n="$name" '
            /^oob / { split(n, p, "-"); c=p[1]; k=substr(n, length(c)+2)
                      row="| " c " | " k " | " $9 " | " $10 " | " $11 " | " $12 " | " $14 }
            /service/ && row != "" && svc == "" { svc=$6 }
            /^send lag/ { for (i=1;i<=NF;i++) if ($i=="p99.9") lag=$(i+1) }
            END { print row " | " svc " | " lag " |" }' "$run/report.txt"
    done
} >"$out/summary.md"
cat "$out/summary.md"
