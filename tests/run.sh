#!/usr/bin/env bash
# Runs every test of the project: the documentation's link check, the Rust unit and
# integration tests (in-process engines, real sockets, the engine binary), then the
# interoperability tests with real third-party Python clients (qemu.qmp, qmp-shell, ovs),
# loadgen against a real ovsdb-server Raft cluster, a real Prometheus scraping the engine,
# the cluster's kill -9 torture and fault tests (pauses and network partitions between
# namespaces: root only, about a minute and a half), and the differential check against
# QEMU's recorded replies (tests/interop/README.md).
# This is the README's test command and what CI runs. Needs cargo and python3 (with venv);
# the Python packages go into .venv/.
set -euo pipefail
cd "$(dirname "$0")/.."

# Documentation: every relative link and #anchor in the tracked Markdown files (and every
# docs/*.md#anchor named in the code) resolves inside the repository (tests/check_links.py).
python3 tests/check_links.py

cargo test --workspace --locked

cargo build -p ooblane-server -p loadgen --locked
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q -r tests/interop/requirements.txt
.venv/bin/python -m pytest -q -p no:cacheprovider tests/interop
