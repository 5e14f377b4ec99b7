#!/usr/bin/env bash
# Seeds and runs every fuzz target for SECONDS each (default 30), one after another, with
# AddressSanitizer when it works here (falls back to `--sanitizer none`, and says so).
# Prints each target's executions and final libFuzzer coverage (`cov:` edges, `ft:`
# features); exits non-zero, naming the crashing input, on the first crash.
#
#   fuzz/run.sh 40            # what CI runs (.ci/run)
#   fuzz/run.sh 300 peek      # one target for five minutes
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Stable toolchain: RUSTC_BOOTSTRAP=1
# lets cargo-fuzz pass its `-Z` sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(framer peek pipeline differential)
fi
logs=artifacts/logs
mkdir -p "$logs"

python3 seed.py

# ASan needs its runtime to start (some sandboxes refuse its shadow memory mapping): build
# with it and run one input; if either fails, fuzz without a sanitizer.
sanitizer=address
if ! cargo fuzz build --sanitizer address >"$logs/build.log" 2>&1 \
    || ! cargo fuzz run --sanitizer address peek -- -runs=1 >>"$logs/build.log" 2>&1; then
    echo "fuzz: AddressSanitizer unavailable here (see $logs/build.log); using --sanitizer none"
    sanitizer=none
    cargo fuzz build --sanitizer none
fi
echo "fuzz: sanitizer: $sanitizer, $seconds s per target"

summary=()
for target in "${targets[@]}"; do
    log="$logs/$target.log"
    echo "fuzz: $target: running for $seconds s (log: fuzz/$log)"
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        echo "FUZZ FAILURE: $target crashed or failed; last lines of fuzz/$log:" >&2
        grep -a -v '^#[0-9]' "$log" | cut -c1-400 | tail -40 >&2
        exit 1
    fi
    done_line=$(grep -a 'DONE' "$log" | tail -1)
    runs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    cov=$(grep -a -o 'cov: [0-9]*' <<<"$done_line" | grep -o '[0-9]*')
    ft=$(grep -a -o 'ft: [0-9]*' <<<"$done_line" | grep -o '[0-9]*')
    corp=$(grep -a -o 'corp: [0-9]*' <<<"$done_line" | grep -o '[0-9]*')
    summary+=("$(printf '%-13s %10s execs  cov: %-5s ft: %-6s corpus: %s' "$target" "$runs" "$cov" "$ft" "$corp")")
done

echo "fuzz: all targets ran without a crash (sanitizer: $sanitizer, $seconds s each)"
printf '  %s\n' "${summary[@]}"
