#!/usr/bin/env bash
# Issue 9's attacks at the issue's sizes against one engine build, each into OUT/<name>.txt,
# every command appended to OUT/commands.txt (run under the lock):
#
#   flock /tmp/loadtest.lock results/tools/hardening.sh OUT_DIR [ENGINE]
#
# stall-N: N connections pipelining behind a `stall` (results/tools/stall_flood.py), default
# flags and, for 2,000, --memory-limit 1 GiB; nonreaders: ten clients that never read
# (nonreaders.py); fd-flood: fd limit 1024, 4,000 attempts (fd_flood.py); slowloris: 1,000
# connections sending one byte a second (slowloris.py); sigterm: SIGTERM with 4 pipelining
# clients (sigterm_pipeline.py). ONLY=REGEX runs the attacks whose name matches.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=$1 ENGINE=${2:-target/release/ooblane}
mkdir -p "$OUT"
run() { # name command...
    local name=$1; shift
    [[ $name =~ ${ONLY:-.} ]] || return 0
    echo "$*" >>"$OUT/commands.txt"
    echo "== $name: $*" >&2
    "$@" >"$OUT/$name.txt" 2>&1
    echo "exit $?" >>"$OUT/$name.txt"
    cat "$OUT/$name.txt" >&2
}
T=results/tools
run stall-100 python3 $T/stall_flood.py 100 "$ENGINE"
run stall-500 python3 $T/stall_flood.py 500 "$ENGINE"
run stall-2000 python3 $T/stall_flood.py 2000 "$ENGINE"
run stall-2000-limit-1g python3 $T/stall_flood.py 2000 "$ENGINE" --memory-limit 1073741824
run nonreaders python3 $T/nonreaders.py "$ENGINE"
run fd-flood python3 $T/fd_flood.py "$ENGINE"
run slowloris python3 $T/slowloris.py "$ENGINE"
run sigterm python3 $T/sigterm_pipeline.py "$ENGINE"
