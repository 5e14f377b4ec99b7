"""Fixtures for the interoperability tests: start the real `ooblane` binary.

The binary is target/debug/ooblane (built by `cargo build -p ooblane-server`, which tests/run.sh
does); override with ENGINE_BIN. Every wait is bounded.
"""

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE_BIN = os.environ.get("ENGINE_BIN", os.path.join(ROOT, "target", "debug", "ooblane"))

STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0  # > the engine's default --drain-timeout (5 s)

LISTEN_RE = re.compile(r"^(QMP|JSON-RPC|metrics) listening on (tcp|unix):(.*)$")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_address(kind, rest):
    """`tcp:HOST:PORT` -> (HOST, PORT); `unix:PATH` -> PATH."""
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        return (host, int(port))
    return rest


class Engine:
    """One running engine process.

    `qmp` / `jsonrpc`: {"tcp": (host, port), "unix": path} as printed by the engine
    (one entry per transport; tests here use at most one listener per transport).
    `wrap` prefixes the command line with a program that execs the engine in place (`ip
    netns exec NS`), so the process is still the engine's.
    """

    def __init__(self, qmp=(), jsonrpc=(), workdir=None, extra_args=(), metrics=False, wrap=()):
        self.workdir = workdir or tempfile.mkdtemp(prefix="eng-")
        self.argv = list(wrap) + [ENGINE_BIN, "--threads", "2", "--no-pin"]
        for a in qmp:
            self.argv += ["--qmp", a]
        for a in jsonrpc:
            self.argv += ["--jsonrpc", a]
        if metrics:
            self.argv += ["--metrics", "tcp:127.0.0.1:0"]
        self.argv += list(extra_args)
        self.stderr_path = os.path.join(self.workdir, "engine-%d.stderr" % time.monotonic_ns())
        self.qmp = {}
        self.jsonrpc = {}
        self.qmp_uri = {}
        self.jsonrpc_uri = {}
        self.metrics = None  # (host, port) of the Prometheus endpoint, with metrics=True
        self.returncode = None
        if not os.access(ENGINE_BIN, os.X_OK):
            pytest.fail("engine binary not found at %s (run `cargo build -p ooblane-server`)" % ENGINE_BIN)
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            env={**os.environ, "NO_COLOR": "1"},
        )
        try:
            self._read_addresses(len(qmp) + len(jsonrpc) + int(bool(metrics)))
        except BaseException:
            self.kill()
            raise

    def _read_addresses(self, expected):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        buf = b""
        lines = []
        fd = self.proc.stdout.fileno()
        while len(lines) < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("engine printed %r within %.0f s; stderr: %s"
                                   % (lines, STARTUP_TIMEOUT, self.stderr_text()))
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("engine exited (rc=%s) before listening; stderr: %s"
                                   % (self.proc.wait(timeout=5), self.stderr_text()))
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                lines.append(line.decode())
        for line in lines:
            m = LISTEN_RE.match(line)
            assert m, "unexpected engine stdout line %r" % line
            dialect, kind, rest = m.groups()
            if dialect == "metrics":
                self.metrics = parse_address(kind, rest)
                continue
            table, uris = (self.qmp, self.qmp_uri) if dialect == "QMP" else (self.jsonrpc, self.jsonrpc_uri)
            table[kind] = parse_address(kind, rest)
            uris[kind] = "%s:%s" % (kind, rest)

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait (bounded) and return the exit code."""
        if self.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("engine did not exit within %.0f s of SIGTERM; stderr: %s"
                                     % (timeout, self.stderr_text()))
            finally:
                self.proc.stdout.close()
                self._stderr.close()
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.returncode = self.proc.returncode
        self.proc.stdout.close()
        self._stderr.close()


def start_engine_on_port(port, dialect="jsonrpc", workdir=None):
    """Start an engine with one TCP listener on a fixed port (OVS reconnect test)."""
    addr = "tcp:127.0.0.1:%d" % port
    if dialect == "jsonrpc":
        return Engine(jsonrpc=[addr], workdir=workdir)
    return Engine(qmp=[addr], workdir=workdir)


def stop_engine(engine):
    """SIGTERM the engine and assert it exited 0."""
    rc = engine.stop()
    assert rc == 0, "engine exited %s; stderr: %s" % (rc, engine.stderr_text())


@pytest.fixture
def sockdir():
    # Short path: Unix socket paths are limited to 107 bytes, pytest's tmp_path may be longer.
    d = tempfile.mkdtemp(prefix="eng-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def engine(sockdir):
    """An engine with TCP + Unix QMP listeners and TCP + Unix JSON-RPC listeners."""
    eng = Engine(
        qmp=["tcp:127.0.0.1:0", "unix:" + os.path.join(sockdir, "qmp.sock")],
        jsonrpc=["tcp:127.0.0.1:0", "unix:" + os.path.join(sockdir, "jsonrpc.sock")],
        workdir=sockdir,
    )
    assert set(eng.qmp) == {"tcp", "unix"} and set(eng.jsonrpc) == {"tcp", "unix"}
    try:
        yield eng
    finally:
        if eng.returncode is None:
            stop_engine(eng)
