#!/usr/bin/env bash
# Issue 16's fault scenarios (tests/interop/test_faults.py: leader / follower paused, leader /
# follower partitioned, leader kill -9, rolling partitions; three members in network
# namespaces, six clients, OOB probes) against one engine build, REPS times in a row, into
# OUT_DIR (never overwritten). As root, under the lock:
#
#   flock /tmp/loadtest.lock results/tools/faults.sh OUT_DIR [ENGINE] [REPS]
#
# ENGINE: target/release/ooblane by default (handed to the tests as ENGINE_BIN); REPS: 3 (each
# run about 90 s). Writes machine.txt (commit, rustc -V, machine, load, the engine's path and
# sha256), commands.txt, run-N.txt (pytest -s: each scenario's line of figures and every
# target it missed) and summary.txt (every run's scenario lines, grouped by scenario, then the
# missed targets). Missed targets are results, not errors: the script exits 0 once every run
# has finished, whatever the tests said (each run-N.txt ends with pytest's exit code).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=$1 ENGINE=$(realpath "${2:-target/release/ooblane}") REPS=${3:-3}
if [[ -e $OUT ]]; then
    echo "$OUT exists: results are never overwritten" >&2
    exit 1
fi
if [[ ! -x $ENGINE ]]; then
    echo "no engine at $ENGINE (cargo build --release -p ooblane-server)" >&2
    exit 1
fi
mkdir -p "$OUT"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q -r tests/interop/requirements.txt
{
    echo "date=$(date -u +%FT%TZ)"
    echo "commit=$(git rev-parse HEAD)$(git diff --quiet || echo ' (dirty)')"
    echo "rustc=$(rustc -V)"
    echo "cpu=$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, kernel $(uname -r)"
    echo "memory=$(free -h | awk '/^Mem:/ {print $2}')"
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "engine=$ENGINE"
    echo "engine_sha256=$(sha256sum "$ENGINE" | cut -d' ' -f1)"
} >"$OUT/machine.txt"
for i in $(seq "$REPS"); do
    cmd=(env "ENGINE_BIN=$ENGINE" .venv/bin/python -m pytest -s -q --tb=short
         -p no:cacheprovider tests/interop/test_faults.py)
    echo "${cmd[*]}" >>"$OUT/commands.txt"
    echo "== run $i of $REPS: ${cmd[*]}" >&2
    "${cmd[@]}" >"$OUT/run-$i.txt" 2>&1
    echo "exit $?" >>"$OUT/run-$i.txt"
done
{
    for scenario in "leader paused" "follower paused" "leader partitioned" \
        "follower partitioned" "leader killed" "rolling partitions"; do
        echo "## $scenario"
        awk -v s="$scenario: " 'index($0, s) == 1 { on = 1; print; next }
            on && /^    [a-z]+ member / { print; next } { on = 0 }' "$OUT"/run-*.txt
        echo
    done
    for run in "$OUT"/run-*.txt; do
        echo "## missed targets, $(basename "$run" .txt)"
        grep -E "^E   (AssertionError: |  )" "$run" | sed -E 's/^E   (AssertionError: )?//'
        tail -2 "$run"
        echo
    done
} >"$OUT/summary.txt"
cat "$OUT/summary.txt" >&2
