"""loadgen against a real 3-member ovsdb-server Raft cluster on loopback.

The schema, the cluster (`ovsdb-tool create-cluster` / `join-cluster`) and the three
servers (each with a `ptcp:` client remote on 127.0.0.1 and its unixctl socket in the test's
tmp dir) are made here. The workload is `transact` inserts (answered after the Raft commit),
`list_dbs` and `echo` (answered at once), so replies overtake each other: JSON-RPC promises
no order, and loadgen must pass while still matching every reply by id.

(a) a steady run against the three remotes passes verification and exits 0;
(b) the leader is stopped (SIGSTOP, so requests are surely in flight on its connections)
    and then killed with SIGKILL mid-run: the run completes on the survivors, reports the
    reconnects per remote, counts the requests in flight on the dropped connections as
    failed, and exits 0 with --expect-errors.

Needs `ovsdb-server`, `ovsdb-tool` and `ovs-appctl` (Debian `openvswitch-common`); skipped
without them unless OVSDB_REQUIRED=1 (CI sets it). loadgen is target/debug/loadgen or
$LOADGEN_BIN. Each run lasts a few seconds; every process is killed at teardown. With
OVSDB_EVIDENCE_DIR set, the run folders are copied there (for closing notes).
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT, free_port

LOADGEN_BIN = os.environ.get("LOADGEN_BIN", os.path.join(ROOT, "target", "debug", "loadgen"))
TOOLS = ("ovsdb-server", "ovsdb-tool", "ovs-appctl")
DB = "lg"
SCHEMA = {"name": DB, "version": "1.0.0", "tables": {"T": {"columns": {"n": {"type": "integer"}}}}}
WORKLOAD = {"lanes": [
    {"name": "insert", "cmd": "transact",
     "args": [DB, {"op": "insert", "table": "T", "row": {"n": 1}}], "rate": 300},
    {"name": "dbs", "cmd": "list_dbs", "rate": 150},
    {"name": "echo", "cmd": "echo", "args": ["lg"], "rate": 150},
]}
# Per connection (3) every lane's period divides the run length (warm-up included), so the
# request counts are exact: 600/s in all.
CLUSTER_TIMEOUT = 15.0
RUN_TIMEOUT = 30.0

missing = [t for t in TOOLS if shutil.which(t) is None]
if missing and os.environ.get("OVSDB_REQUIRED") != "1":
    pytest.skip("%s not installed (Debian openvswitch-common)" % ", ".join(missing),
                allow_module_level=True)


class Member:
    """One ovsdb-server of the cluster."""

    def __init__(self, workdir, index, raft_port):
        self.index = index
        self.db = os.path.join(workdir, "db%d.db" % index)
        self.ctl = os.path.join(workdir, "s%d.ctl" % index)
        self.log = os.path.join(workdir, "s%d.log" % index)
        self.raft = "tcp:127.0.0.1:%d" % raft_port
        self.port = free_port()
        self.remote = "tcp:127.0.0.1:%d" % self.port
        self.proc = None

    def start(self):
        self.stderr = open(self.log + ".stderr", "wb")
        self.proc = subprocess.Popen(
            ["ovsdb-server", self.db, "--remote=ptcp:%d:127.0.0.1" % self.port,
             "--unixctl=" + self.ctl, "--log-file=" + self.log, "--no-chdir",
             "-vconsole:off"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr)

    def status(self):
        """`cluster/status` text, or "" while the server is not answering yet."""
        r = subprocess.run(["ovs-appctl", "-t", self.ctl, "cluster/status", DB],
                           capture_output=True, text=True, timeout=5)
        return r.stdout if r.returncode == 0 else ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc is not None:
            self.stderr.close()


@pytest.fixture
def cluster():
    workdir = tempfile.mkdtemp(prefix="ovsdb-")
    schema = os.path.join(workdir, "schema.json")
    with open(schema, "w") as f:
        json.dump(SCHEMA, f)
    members = [Member(workdir, i, free_port()) for i in range(3)]
    subprocess.run(["ovsdb-tool", "create-cluster", members[0].db, schema, members[0].raft],
                   check=True, timeout=10)
    for m in members[1:]:
        subprocess.run(["ovsdb-tool", "join-cluster", m.db, DB, m.raft, members[0].raft],
                       check=True, timeout=10)
    try:
        for m in members:
            m.start()
        wait_for_cluster(members)
        yield workdir, members
    finally:
        for m in members:
            m.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def wait_for_cluster(members):
    """Until every member is a cluster member and one of them leads (bounded)."""
    deadline = time.monotonic() + CLUSTER_TIMEOUT
    while time.monotonic() < deadline:
        statuses = [m.status() for m in members]
        ready = all("Status: cluster member" in s and "Leader: unknown" not in s
                    and "Leader: " in s for s in statuses)
        if ready and sum("Role: leader" in s for s in statuses) == 1:
            return
        time.sleep(0.1)
    raise TimeoutError("cluster not formed within %.0f s: %r"
                       % (CLUSTER_TIMEOUT, [m.status() for m in members]))


def leader_first(members):
    """The members with the leader first."""
    leader = next(m for m in members if "Role: leader" in m.status())
    return [leader] + [m for m in members if m is not leader]


def loadgen_argv(workdir, remotes, out, duration, *extra):
    workload = os.path.join(workdir, "workload.json")
    with open(workload, "w") as f:
        json.dump(WORKLOAD, f)
    if not os.access(LOADGEN_BIN, os.X_OK):
        pytest.fail("loadgen binary not found at %s (run `cargo build -p loadgen`)" % LOADGEN_BIN)
    argv = [LOADGEN_BIN, "--protocol", "jsonrpc", "--workload", workload, "-c", "3",
            "--warmup", "500ms", "-d", duration, "--drain", "3s", "--seed", "1",
            "--backoff-min", "100ms", "--backoff-max", "400ms", "-o", out]
    for r in remotes:
        argv += ["-r", r]
    return argv + list(extra)


def summary(out):
    keep = os.environ.get("OVSDB_EVIDENCE_DIR")
    if keep:
        shutil.copytree(out, os.path.join(keep, os.path.basename(out)), dirs_exist_ok=True)
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def lane(s, name):
    return next(l for l in s["lanes"] if l["name"] == name)


def test_steady_run_passes_verification(cluster):
    workdir, members = cluster
    out = os.path.join(workdir, "steady")
    argv = loadgen_argv(workdir, [m.remote for m in members], out, "3s",
                        "--server-pid", str(members[0].proc.pid))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    s = summary(out)
    assert s["failures"] == [] and s["checks"] == {
        "ids": True, "order": False, "order_reason": "the protocol promises no reply order"}
    v = s["verification"]
    assert (v["duplicates"], v["unknown_ids"], v["out_of_order"], v["protocol_errors"]) == (0, 0, 0, 0)
    t = s["total"]["counts"]
    # 600/s over 3.5 s (warm-up included), every one answered successfully.
    assert t["sent"] == t["ok"] == 2100, r.stdout
    assert (t["errors"], t["failed"], t["missing"], t["unsent"]) == (0, 0, 0, 0)
    assert [lane(s, n)["counts"]["ok"] for n in ("insert", "dbs", "echo")] == [1050, 525, 525]
    assert s["server"]["replies"] == 1800 and s["server"]["target"].endswith("(ovsdb-server)")
    assert "PASS" in r.stdout and "in-band order not checked" in r.stdout


def test_leader_killed_mid_run_fails_over_to_the_survivors(cluster):
    workdir, members = cluster
    ordered = leader_first(members)
    leader = ordered[0]
    out = os.path.join(workdir, "failover")
    # In order, no shuffle: all three connections start on the leader and move to the next
    # remote when it dies, so the reconnect counts are exact.
    argv = loadgen_argv(workdir, [m.remote for m in ordered], out, "5s",
                        "--no-shuffle", "--expect-errors")
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert run.poll() is None, "loadgen ended early"
        leader.proc.send_signal(signal.SIGSTOP)  # replies stop; requests pile up in flight
        time.sleep(0.3)
        leader.proc.kill()
        leader.proc.wait(timeout=5)
        stdout, stderr = run.communicate(timeout=RUN_TIMEOUT)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=5)
    assert run.returncode == 0, stdout + stderr
    s = summary(out)
    v = s["verification"]
    assert (v["duplicates"], v["unknown_ids"], v["protocol_errors"]) == (0, 0, 0), stdout
    remotes = {r["address"]: r["counts"] for r in s["remotes"]}
    dead, next_one = remotes[leader.remote], remotes[ordered[1].remote]
    assert (dead["sessions"], dead["disconnects"]) == (3, 3), stdout
    assert (next_one["sessions"], next_one["reconnects"]) == (3, 3), stdout
    assert "3 reconnects" in stdout
    t = s["total"]["counts"]
    # The requests in flight when the leader died (at least those sent while it was
    # stopped) are failed, each counted on the dead remote.
    assert t["failed"] > 0 and t["failed"] == dead["failed_requests"], stdout
    assert t["sent"] == t["ok"] + t["errors"] + t["failed"] + t["missing"], stdout
    assert t["sent"] + t["unsent"] == 3300, "every scheduled request is accounted for"
    # The survivors elected a new leader and committed inserts until the end.
    with open(os.path.join(out, "intervals.csv")) as f:
        rows = [line.split(",") for line in f.read().splitlines()[1:]]
    last = max(float(r[0]) for r in rows)
    assert any(r[1] == "insert" and float(r[0]) == last and int(r[2]) > 0 for r in rows), rows
    assert "PASS" in stdout
