#!/usr/bin/env bash
# Issue 20's evidence in one script: the single-crate layout (BEFORE_TREE, e.g. a worktree of
# da23fcf) against the crates by layer (this tree), step by step. Every figure in README.md
# comes from one of these steps; the folder's subdirectories are their output.
#
# Usage, from the after tree's root:
#   results/2026-12-04-layering/layering_ab.sh STEP BEFORE_TREE [ARGS...]
# The before tree: git worktree add --detach /work/wt/before da23fcf
#
# Steps (untimed ones need no lock):
#   deps                     cargo tree lists and counts, both trees -> deps/
#   graph                    results/tools/import_graph.py over both trees -> graph/
#   bins                     the release binaries the benches and ordered_lane_ab.sh use, both
#                            trees (untimed; built inside a lock hold so as not to disturb others)
#   summary                  the tables: build/table.md, bench/summary.md, ab-compare.md
# Timed steps, each under the machine's shared lock (flock /tmp/loadtest.lock layering_ab.sh ...):
#   build DIR [REPS] [FIRST] clean release builds of -p ooblane and -p loadgen, both trees, each
#                            from an empty CARGO_TARGET_DIR, REPS rounds numbered from FIRST,
#                            the side that goes first alternating (odd round: before first);
#                            wall and CPU from /usr/bin/time -v -> DIR/<side>-<pkg>-r<N>.log
#                            (DIR: a folder of results/2026-12-04-layering), one line per build
#                            appended to DIR/summary.txt. PACKAGES (default "ooblane loadgen")
#                            and CARGO_EXTRA (e.g. --lib) vary what is built.
#   bench [ROUNDS] [FIRST]   bench/'s criterion benches (framer peek pipeline handoff), each bench
#                            file on one side then the other, the side first alternating by
#                            round; criterion's output per run and each benchmark's median
#                            (criterion's estimates.json) appended to bench/medians.tsv
#   ab NAME [REPS]           results/tools/ordered_lane_ab.sh NAME BEFORE_TREE/target/release/engine
#                            REPS: the old server against the new (and the naive one), throughput
#                            and OOB isolation, fresh servers (needs `bins` first)
set -euo pipefail
here=results/2026-12-04-layering
step=${1:?usage: layering_ab.sh STEP BEFORE_TREE [ARGS...]}
before=${2:?usage: layering_ab.sh STEP BEFORE_TREE [ARGS...]}
shift 2
after=$PWD
[[ -d $here && -d engine/core ]] || { echo "run from the after tree's root" >&2; exit 2; }
stamp() { echo "started=$(date -u +%FT%TZ) $(rustc -V) before=$(git -C "$before" rev-parse --short HEAD) after=$(git -C "$after" rev-parse --short HEAD)"; }

deps() {
    local out=$here/deps tree side pkg crate
    mkdir -p "$out"
    # One line per package in the normal-dependency graph (the package itself and proc-macros
    # included: all of them are compiled), duplicates and the tree's absolute path removed.
    list() { # tree package
        (cd "$1" && cargo tree --locked -p "$2" -e normal --prefix none) |
            sed -e 's/ (\*)$//' -e "s|($1/|(./|" | sort -u
    }
    {
        stamp
        printf '%-8s %-16s %6s  %s\n' side package crates "heavy crates present (of openraft redb tokio tiny_http prometheus-client clap)"
        for side in before after; do
            if [[ $side == before ]]; then tree=$before; pkgs="ooblane loadgen"
            else tree=$after; pkgs="ooblane-wire ooblane loadgen ooblane-raft ooblane-server"; fi
            for pkg in $pkgs; do
                list "$tree" "$pkg" >"$out/$side-$pkg.txt"
                present=""
                for crate in openraft redb tokio tiny_http prometheus-client clap; do
                    grep -q "^$crate v" "$out/$side-$pkg.txt" && present+="$crate "
                done
                printf '%-8s %-16s %6s  %s\n' "$side" "$pkg" "$(wc -l <"$out/$side-$pkg.txt")" "${present:-none}"
            done
        done
        echo "after: who pulls clap into loadgen (cargo tree --locked -e normal -p loadgen -i clap)"
        cargo tree --locked -e normal -p loadgen -i clap | sed "s|($after/|(./|"
        echo "after: ooblane with --all-features (its only feature, internals, adds no dependency)"
        (cargo tree --locked -p ooblane -e normal --all-features --prefix none) |
            sed -e 's/ (\*)$//' | sort -u | wc -l
    } | tee "$out/counts.txt"
}

graph() {
    local out=$here/graph
    mkdir -p "$out"
    (cd "$before" && python3 "$after/results/tools/import_graph.py" engine/src) >"$out/before-da23fcf.txt"
    python3 results/tools/import_graph.py engine/wire/src engine/core/src engine/raft/src \
        engine/server/src >"$out/after.txt"
    grep -H -A3 '^### import circles' "$out"/*.txt
}

bins() {
    (cd "$before" && cargo build --release --locked -p ooblane) >"$here/build/untimed-before.log" 2>&1
    { cargo build --release --locked -p ooblane-server -p loadgen &&
        cargo build --release --locked -p bench --bins; } >"$here/build/untimed-after.log" 2>&1
    sha256sum "$before/target/release/engine" target/release/{ooblane,loadgen,naive-qmp}
}

build() { # DIR [REPS] [FIRST]
    local out=$here/${1:?build DIR [REPS] [FIRST]} reps=${2:-2} first=${3:-1}
    local packages=${PACKAGES:-ooblane loadgen} extra=${CARGO_EXTRA:-}
    mkdir -p "$out"
    one() { # side tree package round
        local side=$1 tree=$2 pkg=$3 rep=$4 dir log
        dir=$(mktemp -d /tmp/layering-build-XXXXXX)
        log=$out/$side-$pkg-r$rep.log
        echo "load_before=$(cat /proc/loadavg)" >"$log"
        echo "(cd $tree && CARGO_TARGET_DIR=$dir /usr/bin/time -v cargo build --release --locked -p $pkg $extra)" >>"$log"
        # shellcheck disable=SC2086 # $extra: zero or more words
        (cd "$tree" && CARGO_TARGET_DIR=$dir /usr/bin/time -v cargo build --release --locked -p "$pkg" $extra) >>"$log" 2>&1
        echo "load_after=$(cat /proc/loadavg)" >>"$log"
        rm -rf "$dir"
        awk -v s="$side" -v p="$pkg" -v r="$rep" '
            /^load_before=/ { lb=$1; sub(/load_before=/, "", lb) }
            /^load_after=/ { la=$1; sub(/load_after=/, "", la) }
            /User time/ { u=$NF } /System time/ { y=$NF }
            /Elapsed \(wall clock\)/ { w=$NF }
            END { n=split(w, t, ":"); ws = (n==3) ? t[1]*3600+t[2]*60+t[3] : t[1]*60+t[2]
                  printf "%s %s r%s wall_s=%.1f cpu_s=%.1f load1=%s->%s\n", s, p, r, ws, u+y, lb, la }' "$log"
    }
    {
        stamp
        for rep in $(seq "$first" $((first + reps - 1))); do
            if (( rep % 2 )); then order="before after"; else order="after before"; fi
            for pkg in $packages; do
                for side in $order; do
                    if [[ $side == before ]]; then tree=$before; else tree=$after; fi
                    one "$side" "$tree" "$pkg" "$rep"
                done
            done
        done
        echo "finished=$(date -u +%FT%TZ)"
    } | tee -a "$out/summary.txt"
}

bench() { # [ROUNDS] [FIRST]
    local out=$here/bench rounds=${1:-3} first=${2:-1} benches="framer peek pipeline handoff"
    mkdir -p "$out"
    for tree in "$before" "$after"; do
        (cd "$tree" && cargo bench --locked -p bench --no-run) >"$out/build-$(basename "$tree").log" 2>&1
    done
    medians() { # side round bench tree
        find "$4/target/criterion" -path '*/new/estimates.json' | sort | while read -r f; do
            id=${f#"$4/target/criterion/"}; id=${id%/new/estimates.json}
            # only this bench file's groups: their names begin with the bench name (peek/small
            # is stored as peek_small)
            [[ $id == "$3"* ]] || continue
            python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' "$f" |
                sed "s|^|$1\t$2\t$id\t|"
        done >>"$out/medians.tsv"
    }
    [[ -e $out/medians.tsv ]] || printf 'side\tround\tbenchmark\tmedian_ns\n' >"$out/medians.tsv"
    {
        stamp
        for round in $(seq "$first" $((first + rounds - 1))); do
            if (( round % 2 )); then order="before after"; else order="after before"; fi
            for b in $benches; do
                for side in $order; do
                    if [[ $side == before ]]; then tree=$before; else tree=$after; fi
                    echo "round=$round bench=$b side=$side load=$(cat /proc/loadavg) at=$(date -u +%T)"
                    (cd "$tree" && cargo bench --locked -p bench --bench "$b") \
                        >"$out/$side-$b-r$round.txt" 2>&1
                    medians "$side" "$round" "$b" "$tree"
                done
            done
        done
        echo "finished=$(date -u +%FT%TZ) load=$(cat /proc/loadavg)"
    } | tee -a "$out/sitting.txt"
}

ab() { # NAME [REPS]
    local name=${1:?ab NAME [REPS]} reps=${2:-3}
    # its stdout is NAME/summary.md again; failures go to stderr
    results/tools/ordered_lane_ab.sh "$here/$name" "$before/target/release/engine" "$reps" >/dev/null
    echo "$here/$name/summary.md"
}

summary() {
    python3 "$here/summarize.py" build "$here/build/summary.txt" >"$here/build/table.md"
    python3 "$here/summarize.py" build "$here/build-lib/summary.txt" >"$here/build-lib/table.md"
    python3 "$here/summarize.py" bench "$here/bench/medians.tsv" >"$here/bench/summary.md"
    # shellcheck disable=SC2046 # one argument per sitting
    python3 "$here/summarize.py" ab $(ls -d "$here"/ab "$here"/ab-[0-9]*/ | sed 's|/$||') >"$here/ab-compare.md"
}

case $step in
    deps | graph | bins | summary) "$step" ;;
    build | bench | ab) "$step" "$@" ;;
    *) echo "unknown step: $step" >&2; exit 2 ;;
esac
