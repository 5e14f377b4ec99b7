#!/usr/bin/env bash
# The same light workload against the engine and QEMU 7.2's monitor, one connection each (QEMU
# serves one client per QMP chardev): an in-band status query at 2,000/s plus an OOB probe at
# 200/s, 10 s after 2 s warm-up; then `loadgen compare`. Engine: `query-version` + `ping`;
# QEMU: `query-status` + `yank {"instances": []}`. Lanes share names so compare lines them up.
# Usage: results/tools/engine_vs_qemu.sh OUT_DIR   (needs target/release/{engine,loadgen}, qemu)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: engine_vs_qemu.sh OUT_DIR}
mkdir -p "$out"
loadgen=target/release/loadgen
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
run() { echo "$*" >>"$out/commands.txt"; "$@"; }
{
    echo "commit: $(git rev-parse HEAD)$(git diff --quiet || echo ' (dirty)')"
    rustc -V
    qemu-system-x86_64 --version | head -1
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, kernel $(uname -r)"
    echo "load at start: $(cat /proc/loadavg)"
} >"$out/machine.txt"
# Background servers are logged, then started directly, so that `$!` is the server itself
# (a backgrounded `run` would be a subshell, and the trap would kill only that).
engine_cmd=(target/release/ooblane --qmp tcp:127.0.0.1:4490)
qemu_cmd=(qemu-system-x86_64 -machine none -nodefaults -display none
    -chardev socket,id=m,host=127.0.0.1,port=4491,server=on,wait=off,nodelay=on
    -mon chardev=m,mode=control)
echo "${engine_cmd[*]} &" >>"$out/commands.txt"
"${engine_cmd[@]}" >"$out/engine.log" 2>&1 & pids+=($!)
echo "${qemu_cmd[*]} &" >>"$out/commands.txt"
"${qemu_cmd[@]}" >"$out/qemu.log" 2>&1 & pids+=($!)
sleep 1
run $loadgen -r tcp:127.0.0.1:4490 -c 1 --lane 'name=status,cmd=query-version,rate=2000' \
    --lane 'name=probe,cmd=ping,oob,rate=200' -d 10s --warmup 2s --label engine -o "$out/engine" \
    >"$out/engine.txt" 2>&1
run $loadgen -r tcp:127.0.0.1:4491 -c 1 --lane 'name=status,cmd=query-status,rate=2000' \
    --lane 'name=probe,cmd=yank,oob,args={"instances": []},rate=200' -d 10s --warmup 2s \
    --label qemu -o "$out/qemu" >"$out/qemu.txt" 2>&1
run $loadgen compare "$out/engine" "$out/qemu" -o "$out/compare" | tee "$out/compare.txt"
