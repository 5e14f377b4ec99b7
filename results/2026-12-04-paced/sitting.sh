#!/usr/bin/env bash
# Issue 19's sitting: the engine before (OLD, da23fcf) and after (NEW, this branch) side by
# side with the tuned and the naive tokio servers, paced and pipelined, idle CPU, OOB
# isolation, the memory attack at 2,000 connections and a profile of the paced in-band path.
# Run from the repository root, one section per hold of the machine's load-test lock (each
# stays under ~10 minutes, so others get the lock between them):
#
#   flock /tmp/loadtest.lock results/2026-12-04-paced/sitting.sh OUT OLD_ENGINE OLD_NAIVE BIN_DIR SECTION
#
# SECTION: paced | pipelined-idle | memory (MEM_ENGINES="new old" by default) | profile.
# BIN_DIR holds this commit's release `ooblane`, `tuned-qmp` and `loadgen`, copied out of
# target/ so that no rebuild changes them mid-sitting; MALLINFO_SHIM (optional) names the
# LD_PRELOAD shim that logs malloc's counts beside RSS (mallinfo-shim.c here).
set -euo pipefail
out=${1:?usage: sitting.sh OUT OLD_ENGINE OLD_NAIVE BIN_DIR SECTION}
old=$2 naive=$3 bin=$4 section=${5:?section}
tools=results/tools
mkdir -p "$out"
{
    echo "section=$section"
    echo "commit=$(git rev-parse HEAD)$(git diff --quiet HEAD -- engine bench loadgen || echo ' (dirty)')"
    echo "old_engine=$old ($(cat "$(dirname "$old")/COMMIT" 2>/dev/null || echo '?'))"
    echo "rustc=$(rustc -V)"
    echo "cpu=$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, kernel $(uname -r)"
    echo "clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
    echo "load_at_start=$(cat /proc/loadavg)"
    echo "started=$(date -u +%FT%TZ)"
} >>"$out/machine.txt"

case $section in
paced)
    # Paced (1,000 / 5,000 / 20,000 per second, 4 connections, clients sleeping between
    # sends), in-band and OOB `ping`; everything unpinned. new-noawait is the new engine with
    # the parser threads' poll for outcomes off (--await-outcomes-us 0), in-band only.
    python3 "$tools/paced.py" "$out/paced" --loadgen "$bin/loadgen" \
        --server "old=engine:$old" --server "new=engine:$bin/ooblane" \
        --server "tuned=tokio:$bin/tuned-qmp" --server "naive=tokio:$naive" \
        --reps 2 --duration 6 --warmup 1.5 >"$out/paced.txt" 2>&1
    python3 "$tools/paced.py" "$out/paced" --loadgen "$bin/loadgen" --lanes inband \
        --server "new-noawait=engine:$bin/ooblane --await-outcomes-us 0" \
        --reps 2 --duration 6 --warmup 1.5 >"$out/paced-noawait.txt" 2>&1
    ;;
pipelined-idle)
    # Pipelined 4 x 64 (both lanes), the idle server's CPU over 60 s, OOB isolation.
    python3 "$tools/paced.py" "$out/pipelined" --loadgen "$bin/loadgen" --no-paced --pipelined \
        --server "old=engine:$old" --server "new=engine:$bin/ooblane" \
        --server "tuned=tokio:$bin/tuned-qmp" --server "naive=tokio:$naive" \
        --reps 2 --duration 6 --warmup 1.5 >"$out/pipelined.txt" 2>&1
    python3 "$tools/paced.py" "$out/idle" --loadgen "$bin/loadgen" --no-paced \
        --server "old=engine:$old" --server "new=engine:$bin/ooblane" \
        --idle 60 --isolation >"$out/idle.txt" 2>&1
    ;;
memory)
    # Stalled pipelining connections (2,000) and the non-readers, new then old. The
    # incomplete-message timeout is raised: on this shared machine the 2,000-connection
    # read-back can take longer than its 30 s.
    mkdir -p "$out/memory"
    for engine in ${MEM_ENGINES:-new old}; do
        e=$old; [[ $engine == new ]] && e=$bin/ooblane
        env_=()
        if [[ -n ${MALLINFO_SHIM:-} ]]; then
            env_=(ENGINE_ENV="LD_PRELOAD=$MALLINFO_SHIM MALLINFO_LOG=$PWD/$out/memory/$engine-stall-2000.mallinfo")
        fi
        echo "${env_[*]} $tools/stall_flood.py 2000 $e --incomplete-timeout 600" >>"$out/memory/commands.txt"
        env "${env_[@]}" timeout 240 python3 "$tools/stall_flood.py" 2000 "$e" --incomplete-timeout 600 \
            >"$out/memory/$engine-stall-2000.txt" 2>&1 || true
        echo "$tools/nonreaders.py $e" >>"$out/memory/commands.txt"
        timeout 120 python3 "$tools/nonreaders.py" "$e" >"$out/memory/$engine-nonreaders.txt" 2>&1 || true
    done
    ;;
profile)
    # Profile of the paced in-band path: in-band `ping` at 5,000/s, 4 connections, new.
    mkdir -p "$out/profile"
    e=$bin/ooblane
    "$e" --qmp tcp:127.0.0.1:0 >"$out/profile/new.engine.out" 2>/dev/null &
    epid=$!
    sleep 0.5
    port=$(head -1 "$out/profile/new.engine.out" | sed 's/.*://')
    "$bin/loadgen" -r "tcp:127.0.0.1:$port" -c 4 --rate 5000 --lane name=ping,cmd=ping --spin off \
        -d 8s --warmup 1s --no-save >"$out/profile/new.loadgen.txt" 2>&1 &
    lpid=$!
    sleep 2
    perf record -e cpu-clock -F 4999 --call-graph dwarf,16384 -p "$epid" \
        -o /tmp/paced2-new.perf.data -- sleep 4 2>/dev/null
    wait "$lpid"
    kill "$epid"; wait "$epid" || true
    perf report -i /tmp/paced2-new.perf.data --no-children --sort comm,dso --stdio 2>/dev/null \
        | grep '%' | grep -v '^ *|' >"$out/profile/new-by-thread.txt" || true
    perf report -i /tmp/paced2-new.perf.data --no-children --sort comm,sym --stdio -g none \
        2>/dev/null | grep '%' | head -80 >"$out/profile/new-top.txt" || true
    ;;
*)
    echo "unknown section $section" >&2
    exit 2
    ;;
esac
echo "finished=$(date -u +%FT%TZ) load_at_end=$(cat /proc/loadavg)" >>"$out/machine.txt"
