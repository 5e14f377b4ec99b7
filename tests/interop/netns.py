"""Cluster members in network namespaces of their own, and partitions between them (root
only; `ip` from iproute2 and `nft` from nftables).

    root namespace: the test process and its clients, bridge obf<PID>br at 10.77.S.254/24
      ├─ veth obf<PID>v1 ─── netns ooblane-faults-<PID>-1: obf<PID>p1 at 10.77.S.1/24
      ├─ veth obf<PID>v2 ─── netns ooblane-faults-<PID>-2: obf<PID>p2 at 10.77.S.2/24
      └─ veth obf<PID>v3 ─── netns ooblane-faults-<PID>-3: obf<PID>p3 at 10.77.S.3/24

Names carry the test process's id, so two runs never collide, and a run that died without
tearing down (SIGKILL, a crash) is recognised: `Network()` first removes every namespace and
link named after a process that no longer exists, killing what still runs inside. S is the
first 10.77.S.0/24 no interface of the root namespace uses, chosen under a lock file. The
bridge does not hand its frames to the root namespace's iptables (`nf_call_iptables 0`), so a
host firewall cannot cut members off by accident.

A member is started with `wrap(n)` (`ip netns exec NS`, which execs the program in place)
and listens on its own address; every namespace has its own ports, so they are fixed.

**Partitions** are nftables rules in the members' namespaces, by address: `cut(n)` makes
member n drop every packet coming from the peers and each peer drop every packet coming from
n (only input chains: the sender's stack sends as on a real wire, and each side's
retransmissions die on the other side, whatever socket they belong to). The clients'
address (the bridge's) is never matched, so clients reach every member throughout. `heal()`
removes every rule at once. Established connections survive a short partition, as on a real
network.
"""

import atexit
import fcntl
import os
import re
import shutil
import signal
import subprocess

TOOLS = ("ip", "nft")
NS_PREFIX = "ooblane-faults-"
LINK_PREFIX = "obf"
TABLE = "ooblane_faults"
LOCK = "/tmp/ooblane-faults-net.lock"
NS_RE = re.compile(r"^%s(\d+)-\d+$" % NS_PREFIX)
LINK_RE = re.compile(r"^%s(\d+)(br|v\d+|p\d+)$" % LINK_PREFIX)
COMMAND_TIMEOUT = 10.0  # one `ip` or `nft` call: milliseconds normally


def missing_tools():
    return [t for t in TOOLS if shutil.which(t) is None]


def run(*argv, stdin=None, check=True):
    r = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                       timeout=COMMAND_TIMEOUT)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr.strip()))
    return r.stdout


def _alive(pid):
    return os.path.exists("/proc/%d" % pid)


def _kill_inside(ns):
    """SIGKILL every process left in namespace `ns` (engines this test started)."""
    for pid in run("ip", "netns", "pids", ns, check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def clean_leftovers():
    """Removes namespaces and links of earlier runs whose process is gone."""
    for line in run("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        m = NS_RE.match(name)
        if m and not _alive(int(m.group(1))):
            _kill_inside(name)
            run("ip", "netns", "del", name, check=False)
    for line in run("ip", "-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        m = LINK_RE.match(name)
        if m and not _alive(int(m.group(1))):
            run("ip", "link", "del", name, check=False)


def _free_subnet():
    used = set(re.findall(r"inet 10\.77\.(\d+)\.", run("ip", "-4", "-o", "addr", "show")))
    for s in range(256):
        if str(s) not in used:
            return s
    raise RuntimeError("every 10.77.S.0/24 is in use")


class Network:
    """`size` member namespaces on one bridge; see the module doc."""

    QMP_PORT = 4400
    RAFT_PORT = 7100

    def __init__(self, size=3):
        self.nodes = list(range(1, size + 1))
        tag = "%s%d" % (LINK_PREFIX, os.getpid())
        self.bridge = tag + "br"
        self.veth = {n: ("%sv%d" % (tag, n), "%sp%d" % (tag, n)) for n in self.nodes}
        self.ns = {n: "%s%d-%d" % (NS_PREFIX, os.getpid(), n) for n in self.nodes}
        self.blocked = {n: set() for n in self.nodes}  # member -> members it drops
        self.made = False
        atexit.register(self.teardown)
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            clean_leftovers()
            self.subnet = _free_subnet()
            try:
                self._make()
            except BaseException:
                self.teardown()
                raise

    def host(self, n):
        return "10.77.%d.%d" % (self.subnet, n)

    @property
    def client_host(self):
        return "10.77.%d.254" % self.subnet

    def wrap(self, n):
        return ("ip", "netns", "exec", self.ns[n])

    def _make(self):
        self.made = True
        run("ip", "link", "add", self.bridge, "type", "bridge", "stp_state", "0",
            "nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0")
        run("ip", "addr", "add", self.client_host + "/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for n in self.nodes:
            ns, (outside, inside) = self.ns[n], self.veth[n]
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns)
            run("ip", "link", "set", outside, "master", self.bridge, "up")
            run("ip", "-n", ns, "addr", "add", self.host(n) + "/24", "dev", inside)
            run("ip", "-n", ns, "link", "set", inside, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        # Fails here, not at the first partition, if this kernel has no nftables.
        run("ip", "netns", "exec", self.ns[self.nodes[0]], "nft", "list", "ruleset")

    def cut(self, node, peers=None):
        """Cuts `node` off from `peers` (default: every other member), both directions."""
        peers = [p for p in (peers or self.nodes) if p != node]
        self.blocked[node].update(peers)
        for p in peers:
            self.blocked[p].add(node)
        for n in [node] + peers:
            self._apply(n)

    def _apply(self, n):
        sources = ", ".join(self.host(p) for p in sorted(self.blocked[n]))
        rules = ("table inet %s\ndelete table inet %s\n" % (TABLE, TABLE)
                 + "table inet %s {\n chain input {\n  type filter hook input priority filter;"
                   " policy accept;\n  ip saddr { %s } drop\n }\n}\n" % (TABLE, sources))
        run("ip", "netns", "exec", self.ns[n], "nft", "-f", "-", stdin=rules)

    def heal(self):
        """Removes every partition rule."""
        for n in self.nodes:
            if self.blocked[n]:
                run("ip", "netns", "exec", self.ns[n], "nft", "delete", "table", "inet", TABLE)
                self.blocked[n] = set()

    def teardown(self):
        """Kills what runs in the namespaces, deletes them and the bridge (idempotent)."""
        if not self.made:
            return
        self.made = False
        for n in self.nodes:
            _kill_inside(self.ns[n])
            run("ip", "netns", "del", self.ns[n], check=False)
            run("ip", "link", "del", self.veth[n][0], check=False)
        run("ip", "link", "del", self.bridge, check=False)
