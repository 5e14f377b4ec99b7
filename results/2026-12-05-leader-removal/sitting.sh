#!/bin/bash
# One locked sitting: results/tools/membership.py (join, remove a follower, remove the leader
# and stop it at once, under 5,000 adds/s; then reads through a follower) against the engine
# before and after the leader-removal change, alternating, twice each. The same loadgen (with
# error texts) drives both. Binaries: release builds of 5229d70 (before) and of the change
# (after), copied out of target/ so that the sitting does not rebuild them.
set -u
cd "$(dirname "$0")/../.."
out=results/2026-12-05-leader-removal
py=${PYTHON:-/tmp/membership-venv/bin/python}
echo "sitting start $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in 1 2; do
    for build in before after; do
        timeout 300 "$py" -u results/tools/membership.py "$out/$build-$round" \
            --engine "/work/bin-$build-removal/ooblane" \
            --loadgen /work/bin-after-removal/loadgen > "$out/$build-$round.txt" 2>&1
        echo "$build-$round rc=$? $(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
    done
done
echo "sitting end $(date -u +%FT%TZ)"
