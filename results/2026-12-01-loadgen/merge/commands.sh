set -e
target/release/engine --qmp tcp:127.0.0.1:47444 --threads 2 > results/2026-12-01-loadgen/merge/engine.out 2>results/2026-12-01-loadgen/merge/engine.err &
EP=$!
sleep 0.5
target/release/loadgen -r tcp:127.0.0.1:47444 -c 4 --rate 5000 -d 5s --warmup 1s --server-pid $EP -o results/2026-12-01-loadgen/merge/single --label single > results/2026-12-01-loadgen/merge/single.txt 2>&1
T=$(( $(date +%s) + 3 ))
target/release/loadgen -r tcp:127.0.0.1:47444 -c 2 --rate 2500 -d 5s --warmup 1s --start-at $T --server-pid $EP -o results/2026-12-01-loadgen/merge/pa --label pa > results/2026-12-01-loadgen/merge/pa.txt 2>&1 &
A=$!
target/release/loadgen -r tcp:127.0.0.1:47444 -c 2 --rate 2500 -d 5s --warmup 1s --start-at $T -o results/2026-12-01-loadgen/merge/pb --label pb > results/2026-12-01-loadgen/merge/pb.txt 2>&1
wait $A
kill -TERM $EP; wait $EP || true
target/release/loadgen merge results/2026-12-01-loadgen/merge/pa results/2026-12-01-loadgen/merge/pb -o results/2026-12-01-loadgen/merge/merged > results/2026-12-01-loadgen/merge/merged.txt 2>&1
target/release/loadgen compare results/2026-12-01-loadgen/merge/single results/2026-12-01-loadgen/merge/merged -o results/2026-12-01-loadgen/merge/cmp2 > results/2026-12-01-loadgen/merge/cmp2.txt 2>&1
