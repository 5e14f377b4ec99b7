#!/usr/bin/env bash
# Soak (issue 9, item 7): the release engine, default flags, under the default mixed load
# (in-band `work` 20 µs, share 9 + exec-oob `ping`, share 1; 4 connections) at 80% of the
# saturation rate measured first on the same engine, for DURATION (default 30m). The
# engine's RSS and open descriptors are sampled from /proc every SAMPLE seconds (default 2)
# into samples.csv; loadgen writes its interval log (intervals.csv, every 5 s) in soak/.
# Then results/tools/soak_plot.py draws RSS, fds and p99 over time (soak.png, soak.svg).
#
#   flock /tmp/loadtest.lock results/tools/soak.sh OUT_DIR [DURATION]
#   (ENGINE_BIN, LOADGEN_BIN: other builds than target/release/)
#
# Saturation: `loadgen sweep` over fixed rates (RATES, 3 s each); the saturation rate is the
# achieved rate of the last step before the first saturated one (loadgen's verdict: some
# lane's p99 past 10 ms, or under 95% of the target achieved); if no step saturates, the
# highest rate stands in (said on stderr).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
source results/tools/helpers.sh
OUT=$1 DURATION=${2:-30m} SAMPLE=${SAMPLE:-2}
ENGINE=${ENGINE_BIN:-$ROOT/target/release/ooblane}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
RATES=${RATES:-8000,12000,16000,20000,24000,28000,32000}
mkdir -p "$OUT"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
run() { echo "$*" >>"$OUT/commands.txt"; "$@"; }

port=$(free_port)
echo "$ENGINE --qmp tcp:127.0.0.1:$port" >>"$OUT/commands.txt"
"$ENGINE" --qmp "tcp:127.0.0.1:$port" >"$OUT/engine.log" 2>&1 &
ENGINE_PID=$!; PIDS+=("$ENGINE_PID")
wait_listen "$port"
ADDR=tcp:127.0.0.1:$port

run "$LOADGEN" sweep -r "$ADDR" --rates "$RATES" -d 3s --warmup 1s --out "$OUT/sweep" >"$OUT/sweep.txt"
SAT=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
steps = d["steps"]
first = next((i for i, step in enumerate(steps) if step["saturated"]), len(steps))
if first == 0:
    sys.exit("soak.sh: the first step of the sweep is saturated already")
if first == len(steps):
    print("soak.sh: no step saturated: the highest rate stands in", file=sys.stderr)
lanes = steps[first - 1]["summary"]["lanes"]
print(round(sum(l["rate"] for l in lanes)))' "$OUT/sweep/sweep.json")
RATE=$((SAT * 8 / 10))
echo "saturation ${SAT}/s (the last unsaturated step of the sweep); soak at 80%: ${RATE}/s for $DURATION" | tee "$OUT/rate.txt"

# /proc sampler: unix time, RSS bytes, open fds, threads.
(
    echo "t,rss_bytes,fds,threads"
    while kill -0 "$ENGINE_PID" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$ENGINE_PID/status")
        threads=$(awk '/^Threads:/ { print $2 }' "/proc/$ENGINE_PID/status")
        fds=$(ls "/proc/$ENGINE_PID/fd" | wc -l)
        echo "$(date +%s.%N),$rss,$fds,$threads"
        sleep "$SAMPLE"
    done
) >"$OUT/samples.csv" 2>/dev/null &
SAMPLER=$!; PIDS+=("$SAMPLER")

START=$(date +%s.%N)
echo "$START" >"$OUT/soak-start.txt"
run "$LOADGEN" -r "$ADDR" --rate "$RATE" -d "$DURATION" --warmup 5s --interval 5s \
    --server-pid "$ENGINE_PID" --label soak --out "$OUT/soak" >"$OUT/soak.txt"
kill "$SAMPLER" 2>/dev/null || true
kill -TERM "$ENGINE_PID"
wait "$ENGINE_PID" || true
python3 results/tools/soak_plot.py "$OUT"
