#!/usr/bin/env python3
"""What a client of a follower sees when that follower is removed (issue 17), in isolation:
three members on loopback, one client pipelining `counter-add` (8 in flight) through
follower F, F removed through the leader after 1 s while the client goes on for 2 s more;
then every request must have its reply within the engine's 3-s bound. Prints each reply kind
with its count, the requests never answered (sent when, relative to the removal), F's and
the leader's `query-cluster`, and whether F exits on SIGTERM. Exit status 1 if a request
went unanswered or F did not exit.

    results/tools/removed_follower_repro.py ENGINE

Found by the membership run (results/2026-12-04-membership): a removed follower left its
clients' requests unanswered and ignored SIGTERM.
"""

import collections
import json
import os
import shutil
import sys
import tempfile
import threading
import time

from membership import Member, Qmp, ask, wait_port

WINDOW = 8
BOUND = 3.5  # the engine's 3-s deadline, and room


def start(engine, workdir):
    members = {n: Member(n, workdir) for n in (1, 2, 3)}
    arg = ",".join("%d=tcp:127.0.0.1:%d" % (n, m.raft_port) for n, m in members.items())
    for m in members.values():
        m.start(m.argv(engine, arg, join=False))
    for m in members.values():
        wait_port(m.qmp_port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for m in members.values():
            if m.status()["role"] == "leader":
                return members, m
        time.sleep(0.1)
    raise TimeoutError("no leader")


class Client(threading.Thread):
    """Pipelines counter-add on one connection, WINDOW in flight, until `stop`."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.q, self.stop = Qmp(port), threading.Event()
        self.sent, self.replies, self.lock = {}, {}, threading.Lock()

    def run(self):
        reader = threading.Thread(target=self.read, daemon=True)
        reader.start()
        n = 0
        while not self.stop.is_set():
            with self.lock:
                waiting = len(self.sent) - len(self.replies)
            if waiting < WINDOW:
                n += 1
                self.sent[n] = time.monotonic()
                self.q.send({"execute": "counter-add", "arguments": {"delta": 1}, "id": n})
            else:
                time.sleep(0.001)

    def read(self):
        while True:
            try:
                reply = self.q.read(3600)
            except (OSError, EOFError):
                return
            if "id" in reply:
                with self.lock:
                    self.replies[reply["id"]] = (time.monotonic(), reply)


def main():
    engine = sys.argv[1]
    workdir = tempfile.mkdtemp(prefix="removed-repro-")
    members, leader = start(engine, workdir)
    follower = next(m for m in members.values() if m is not leader)
    try:
        client = Client(follower.qmp_port)
        client.start()
        time.sleep(1.0)
        removed_at = time.monotonic()
        reply = ask(leader.qmp_port, "cluster-remove-member", {"node": follower.node},
                    timeout=15)
        print("remove member %d via leader %d: %s after %.1f ms" % (
            follower.node, leader.node, json.dumps(reply),
            (time.monotonic() - removed_at) * 1000))
        time.sleep(2.0)
        client.stop.set()
        time.sleep(BOUND + 1)
        ok = report(client, removed_at)
        for m in (follower, leader):
            print("member %d query-cluster: %s" % (m.node, json.dumps(m.status())))
        sigterm = follower.stop()
        print("member %d after SIGTERM: %s" % (follower.node, json.dumps(sigterm)))
        ok = ok and sigterm["exited"] == "SIGTERM"
    finally:
        for m in members.values():
            m.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def report(client, removed_at):
    with client.lock:
        sent, replies = dict(client.sent), dict(client.replies)
    kinds = collections.Counter(
        "ok" if "return" in r else r["error"]["desc"] for _, r in replies.values())
    late = [i for i, (t, _) in replies.items() if t - sent[i] > BOUND]
    missing = sorted(i for i in sent if i not in replies)
    print("sent %d, answered %d (%d later than %.1f s), unanswered %d" % (
        len(sent), len(replies), len(late), BOUND, len(missing)))
    for kind, count in kinds.most_common():
        print("  %6d  %s" % (count, kind))
    if missing:
        rel = [sent[i] - removed_at for i in missing]
        print("unanswered: ids %d..%d, sent %.3f s to %.3f s after the removal request" % (
            missing[0], missing[-1], min(rel), max(rel)))
    return not missing and not late


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
