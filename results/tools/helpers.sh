# Shell helpers shared by the results scripts (sourced: results/run.sh, results/tools/soak.sh,
# results/tools/ordered_lane_ab.sh).
# free_port prints a free loopback TCP port; wait_listen PORT waits (10 s at most) until
# something listens on it.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_listen() {
    for _ in $(seq 100); do
        ss -ltn "sport = :$1" | grep -q LISTEN && return 0
        sleep 0.1
    done
    echo "$(basename "$0"): nothing listens on port $1" >&2
    return 1
}
