#!/usr/bin/env bash
# Runs every test of the project: the Rust unit and integration tests (in-process engines,
# real sockets, the engine binary). This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
