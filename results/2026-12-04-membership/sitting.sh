#!/bin/bash
# One locked sitting: the removed-follower repro (debug logs kept), issue 17's membership run
# (and its --wait-handover variant), the membership interop tests.
set -u
cd /work/wt/membership
echo "session start $(date -u +%FT%TZ)"
rm -rf /tmp/diag-out; mkdir -p /tmp/diag-out
( cd /tmp && RUST_LOG=ooblane=debug,ooblane_raft=debug,openraft=debug PYTHONPATH=/work/wt/membership/results/tools \
  timeout 60 python3 -u /tmp/repro_keep.py /work/wt/membership/target/release/ooblane ) > /tmp/diag-out/repro.txt 2>&1
echo "repro rc=$? $(date -u +%T)"
timeout 240 /tmp/membership-venv/bin/python -u results/tools/membership.py results/2026-12-04-membership > /tmp/diag-out/membership.txt 2>&1
echo "membership rc=$? $(date -u +%T)"
timeout 180 /work/main/.venv/bin/python -m pytest -q tests/interop/test_membership.py > /tmp/diag-out/pytest.txt 2>&1
echo "pytest rc=$? $(date -u +%T)"
timeout 240 /tmp/membership-venv/bin/python -u results/tools/membership.py results/2026-12-04-membership/wait-handover --wait-handover > /tmp/diag-out/wait-handover.txt 2>&1
echo "wait-handover rc=$? $(date -u +%T)"
echo "session end $(date -u +%FT%TZ)"
