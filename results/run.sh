#!/usr/bin/env bash
# The results suite: builds in release, runs a fixed set of loadgen scenarios against the
# engine (a separate process) and QEMU's own monitor, and writes a dated folder
# results/<YYYY-MM-DD>-<set>/ (never overwritten) with README.md (commands, commit, rustc,
# machine), summary.md (tables generated from each run's summary.json), every run's raw
# .hgrm / summary.json / report.txt / PNG plot, and loadgen's side-by-side comparisons.
#
#   results/run.sh            full run, set "baseline" (about 15 minutes on 2 cores)
#   results/run.sh --quick    short durations, set "quick" (checks the script, ~3 minutes)
#   options: --set NAME  --no-criterion  --no-qemu  --no-wait (skip waiting for a quiet machine)
#
# Scenarios (each measured side by side in the same run):
#   1 throughput   OOB and in-band `ping`, depth 1/16/64 x 1/4/16 connections, closed loop,
#                  each quoted against loadgen's loopback echo ceiling of the same shape, with
#                  the server's CPU per reply and context switches per 1,000 replies from
#                  /proc (loadgen --server-pid); the same shapes (4 connections) against a
#                  naive tokio + serde_json QMP server (bench/src/bin/naive-qmp.rs)
#   2 isolation    OOB `ping` at a fixed rate, service time (send to reply) over several fresh
#                  probe connections, the worst reported: (a) idle executor, (b) executor
#                  saturated by a second client's closed-loop `work`, (c) executor held by
#                  `stall`; engine with default flags, clients sleeping between sends
#   3 qemu         the same throughput (1 connection: one client per QMP chardev) and
#                  isolation (a)/(b) against qemu-system-x86_64 -machine none (in-band
#                  `query-status`, OOB `yank {"instances": []}`)
#   4 scaling      throughput as the engine's parser threads go 1 .. nproc
#   5 paced        clients that send and wait (loadgen --spin off: they sleep between sends)
#                  at 1,000 / 5,000 / 20,000 requests/s over 4 connections, in-band and OOB
#                  `ping`, beside the tuned tokio server (bench/src/bin/tuned-qmp.rs); the
#                  pipelined shape (4 x 64) beside it; server CPU from schedstat and context
#                  switches per request, p50; the idle engine's CPU over 60 s
#                  (results/tools/paced.py)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0 SET="" CRITERION=1 QEMU=1 WAIT=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --set) SET=$2; shift ;;
        --no-criterion) CRITERION=0 ;;
        --no-qemu) QEMU=0 ;;
        --no-wait) WAIT=0 ;;
        *) echo "usage: $0 [--quick] [--set NAME] [--no-criterion] [--no-qemu] [--no-wait]" >&2; exit 2 ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then
    SET=${SET:-quick}; DUR=1s; WARM=300ms; ISO_DUR=2; ISO_RATE=2000; CRITERION=0; WAIT=0
    PACED=(--duration 1 --warmup 0.3 --reps 1 --idle 5)
else
    SET=${SET:-baseline}; DUR=5s; WARM=1s; ISO_DUR=6; ISO_RATE=2000
    PACED=(--duration 10 --warmup 2 --reps 3 --idle 60)
fi
OUT="results/$(date -u +%F)-$SET"
if [[ -e $OUT ]]; then
    echo "run.sh: $OUT exists; results are never overwritten (use --set NAME)" >&2
    exit 1
fi

LOADGEN=$ROOT/target/release/loadgen
# ENGINE_BIN=/path/to/engine runs the suite against another build (e.g. an older commit's).
ENGINE=${ENGINE_BIN:-$ROOT/target/release/ooblane}
NAIVE=$ROOT/target/release/naive-qmp
TUNED=$ROOT/target/release/tuned-qmp
NPROC=$(nproc)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap cleanup EXIT INT TERM

log() { printf '[run.sh %s] %s\n' "$(date -u +%T)" "$*" >&2; }
# free_port, wait_listen
source "$ROOT/results/tools/helpers.sh"
# Every command run is appended to commands.txt, so the README lists exactly what ran.
run() { echo "$*" >>"$OUT/commands.txt"; "$@"; }

# --- prerequisites -------------------------------------------------------------------------
if [[ $QEMU == 1 ]] && ! command -v qemu-system-x86_64 >/dev/null; then
    log "installing qemu-system-x86 (Debian)"
    apt-get update -qq && apt-get install -y -qq qemu-system-x86 >/dev/null
fi
log "building release"
cargo build --release -p loadgen -p ooblane -p bench --bins

if [[ $WAIT == 1 ]]; then
    for _ in $(seq 45); do
        awk '{ exit !($1 < 0.6) }' /proc/loadavg && break
        log "waiting for a quiet machine: load $(cut -d' ' -f1-3 /proc/loadavg)"
        sleep 20
    done
fi
mkdir -p "$OUT"
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
# The commit the binaries were built from (others may commit while the suite runs).
COMMIT=$(git rev-parse HEAD)
DIRTY=$(git status --porcelain | grep -q . && echo yes || echo no)
git status --porcelain >"$OUT/git-status.txt"
START_TIME=$(date -u +%FT%TZ)

# --- engine ----------------------------------------------------------------------------------
ENGINE_PID="" ENGINE_ADDR=""
start_engine() { # [engine args...] (none: the default thread layout)
    local port; port=$(free_port)
    echo "$ENGINE --qmp tcp:127.0.0.1:$port $*" >>"$OUT/commands.txt"
    "$ENGINE" --qmp "tcp:127.0.0.1:$port" "$@" >>"$OUT/engine.log" 2>&1 &
    ENGINE_PID=$!; PIDS+=("$ENGINE_PID")
    ENGINE_ADDR="tcp:127.0.0.1:$port"
    wait_listen "$port"
}
stop_engine() { kill "$ENGINE_PID" 2>/dev/null || true; wait "$ENGINE_PID" 2>/dev/null || true; }
# The naive server takes the engine's place (same variables, same stop).
start_naive() {
    local port; port=$(free_port)
    echo "$NAIVE tcp:127.0.0.1:$port" >>"$OUT/commands.txt"
    "$NAIVE" "tcp:127.0.0.1:$port" >>"$OUT/engine.log" 2>&1 &
    ENGINE_PID=$!; PIDS+=("$ENGINE_PID")
    ENGINE_ADDR="tcp:127.0.0.1:$port"
    wait_listen "$port"
}

# One closed-loop run quoted against the echo ceiling of the same shape, with the server's
# cost per reply sampled from /proc.
throughput() { # dir remote depth conns lane-spec
    run "$LOADGEN" -r "$2" --depth "$3" -c "$4" --lane "$5" --ceiling -d "$DUR" --warmup "$WARM" \
        --server-pid "$ENGINE_PID" --label "$(basename "$1")" -o "$1" >"$1.txt" 2>&1 \
        || log "FAILED: $1 (see $1.txt)"
}

# Fixed-rate OOB runs from PROBES fresh connections in turn (each lands on some parser
# thread); `$saturate` (a command) runs beside them when given. Clients sleep between sends
# (--spin off), so none takes a core the server needs.
PROBES=4
isolation() { # dir remote lane-spec [background command...]
    local dir=$1 remote=$2 lane=$3; shift 3
    local bg=""
    if [[ $# -gt 0 ]]; then
        echo "$* &" >>"$OUT/commands.txt"
        "$@" >"$dir.background.txt" 2>&1 &
        bg=$!; PIDS+=("$bg"); sleep 1
    fi
    for probe in $(seq "$PROBES"); do
        run "${PIN[@]}" "$LOADGEN" -r "$remote" -c 1 --lane "$lane" -d "${ISO_DUR}s" --warmup 500ms \
            --spin off --label "$(basename "$dir")-p$probe" -o "$dir-p$probe" >"$dir-p$probe.txt" 2>&1 \
            || log "FAILED: $dir-p$probe (see $dir-p$probe.txt)"
    done
    if [[ -n $bg ]]; then wait "$bg" || log "background of $dir exited $? (see $dir.background.txt)"; fi
}
# The saturator: a second client keeping `work` queued on the executor the whole time.
saturator() { # remote lane-spec
    echo "${PIN[@]}" "$LOADGEN" -r "$1" -c 1 --depth 8 --lane "$2" -d "$(((ISO_DUR + 2) * PROBES + 3))s" --warmup 0s --spin off --no-save
}

log "scenario 1: throughput vs loopback ceiling (engine, default flags)"
mkdir -p "$OUT/1-throughput"
start_engine
for conns in 1 4 16; do
    for depth in 1 16 64; do
        throughput "$OUT/1-throughput/oob-ping-c$conns-d$depth" "$ENGINE_ADDR" "$depth" "$conns" 'name=ping,cmd=ping,oob'
        throughput "$OUT/1-throughput/inband-ping-c$conns-d$depth" "$ENGINE_ADDR" "$depth" "$conns" 'name=ping,cmd=ping'
    done
done
stop_engine
log "scenario 1: the naive tokio + serde_json server, 4 connections"
start_naive
for depth in 1 16 64; do
    throughput "$OUT/1-throughput/naive-oob-ping-c4-d$depth" "$ENGINE_ADDR" "$depth" 4 'name=ping,cmd=ping,oob'
    throughput "$OUT/1-throughput/naive-inband-ping-c4-d$depth" "$ENGINE_ADDR" "$depth" 4 'name=ping,cmd=ping'
done
stop_engine

# Isolation runs the engine as a user would: default flags (the executor alone on the last
# core when there are two or more) and unpinned clients.
PIN=()
log "scenario 2: OOB isolation (engine, default flags, $PROBES probe connections per case)"
mkdir -p "$OUT/2-isolation"
start_engine
OOB_LANE="name=ping,cmd=ping,oob,rate=$ISO_RATE"
isolation "$OUT/2-isolation/a-idle" "$ENGINE_ADDR" "$OOB_LANE"
# shellcheck disable=SC2046
isolation "$OUT/2-isolation/b-saturated" "$ENGINE_ADDR" "$OOB_LANE" \
    $(saturator "$ENGINE_ADDR" 'name=work,cmd=work,args={"us":100}')
isolation "$OUT/2-isolation/c-stalled" "$ENGINE_ADDR" "$OOB_LANE" \
    "${PIN[@]}" python3 "$ROOT/results/tools/stall.py" 127.0.0.1 "${ENGINE_ADDR##*:}" "$(((ISO_DUR + 2) * PROBES + 2))"
run "$LOADGEN" compare "$OUT/2-isolation/a-idle-p1" "$OUT/2-isolation/b-saturated-p1" \
    "$OUT/2-isolation/c-stalled-p1" -o "$OUT/2-isolation/compare" >/dev/null
stop_engine

if [[ $QEMU == 1 ]]; then
    log "scenario 3: QEMU's monitor, same shapes"
    mkdir -p "$OUT/3-qemu"
    qemu-system-x86_64 --version | head -1 >"$OUT/qemu-version.txt"
    # Two QMP chardevs: one for the measured client, one for the saturating client.
    QPORTS=("$(free_port)" "$(free_port)")
    QARGS=(-machine none -nodefaults -display none)
    for i in 0 1; do
        QARGS+=(-chardev "socket,id=m$i,host=127.0.0.1,port=${QPORTS[$i]},server=on,wait=off,nodelay=on"
            -mon "chardev=m$i,mode=control")
    done
    echo "qemu-system-x86_64 ${QARGS[*]}" >>"$OUT/commands.txt"
    qemu-system-x86_64 "${QARGS[@]}" >>"$OUT/qemu.log" 2>&1 &
    QEMU_PID=$!; PIDS+=("$QEMU_PID")
    wait_listen "${QPORTS[0]}"; wait_listen "${QPORTS[1]}"
    Q0="tcp:127.0.0.1:${QPORTS[0]}" Q1="tcp:127.0.0.1:${QPORTS[1]}"
    for depth in 1 16 64; do
        throughput "$OUT/3-qemu/oob-yank-c1-d$depth" "$Q0" "$depth" 1 'name=yank,cmd=yank,oob,args={"instances":[]}'
        throughput "$OUT/3-qemu/inband-query-status-c1-d$depth" "$Q0" "$depth" 1 'name=query-status,cmd=query-status'
    done
    QOOB_LANE="name=yank,cmd=yank,oob,args={\"instances\":[]},rate=$ISO_RATE"
    isolation "$OUT/3-qemu/a-idle" "$Q0" "$QOOB_LANE"
    # shellcheck disable=SC2046
    isolation "$OUT/3-qemu/b-saturated" "$Q0" "$QOOB_LANE" \
        $(saturator "$Q1" 'name=query-status,cmd=query-status')
    run "$LOADGEN" compare "$OUT/2-isolation/b-saturated-p1" "$OUT/3-qemu/b-saturated-p1" \
        -o "$OUT/3-qemu/compare-saturated" >/dev/null
    kill "$QEMU_PID"; wait "$QEMU_PID" 2>/dev/null || true
fi

log "scenario 4: scaling with parser threads (1..$NPROC)"
mkdir -p "$OUT/4-scaling"
for threads in $(seq 1 "$NPROC"); do
    start_engine --threads "$threads"
    throughput "$OUT/4-scaling/oob-ping-t$threads" "$ENGINE_ADDR" 16 4 'name=ping,cmd=ping,oob'
    throughput "$OUT/4-scaling/inband-ping-t$threads" "$ENGINE_ADDR" 16 4 'name=ping,cmd=ping'
    stop_engine
done

log "scenario 5: paced clients, the pipelined shape and the idle engine (engine, tuned tokio server)"
run python3 "$ROOT/results/tools/paced.py" "$OUT/5-paced" --loadgen "$LOADGEN" \
    --server "engine=engine:$ENGINE" --server "tuned=tokio:$TUNED" --pipelined "${PACED[@]}" \
    >"$OUT/5-paced.txt" 2>&1 || log "FAILED: scenario 5 (see 5-paced.txt)"

if [[ $CRITERION == 1 ]]; then
    log "criterion benchmarks"
    echo "cargo bench -p bench" >>"$OUT/commands.txt"
    cargo bench -p bench 2>&1 | grep -v -E '^\s*(Compiling|Running|Finished)|Warming up|Collecting|Analyzing' \
        >"$OUT/criterion.txt"
fi

# --- machine facts and summary --------------------------------------------------------------
{
    echo "started=$START_TIME"
    echo "finished=$(date -u +%FT%TZ)"
    echo "commit=$COMMIT"
    echo "dirty=$DIRTY"
    echo "rustc=$(rustc -V)"
    echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    echo "nproc=$NPROC"
    echo "kernel=$(uname -r)"
    echo "load_at_start=$LOAD_AT_START"
    echo "quick=$QUICK"
    echo "duration=$DUR warmup=$WARM isolation_duration=${ISO_DUR}s isolation_rate=$ISO_RATE"
    [[ -f $OUT/qemu-version.txt ]] && echo "qemu=$(cat "$OUT/qemu-version.txt")"
} >"$OUT/machine.txt"
python3 "$ROOT/results/tools/summarize.py" "$OUT"
log "done: $OUT"
