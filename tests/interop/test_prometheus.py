"""The metrics endpoint scraped by a real Prometheus (Debian's `prometheus`, or $PROMETHEUS).

The engine runs with `--metrics tcp:127.0.0.1:0`; Prometheus gets a scrape config pointing at
it (0.2 s interval), a temporary storage directory and a loopback listen address. After a
known number of requests the values are read back through Prometheus' HTTP API
(`/api/v1/query`) and must be exact. Every wait is bounded.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

from conftest import Engine, free_port, stop_engine

PROMETHEUS = os.environ.get("PROMETHEUS", shutil.which("prometheus") or "/usr/bin/prometheus")
HAVE_PROMETHEUS = os.access(PROMETHEUS, os.X_OK)
WAIT = 30.0  # generous: Prometheus start-up plus a few scrapes on a shared CI machine

pytestmark = pytest.mark.skipif(not HAVE_PROMETHEUS, reason="Prometheus not installed")

CONFIG = """\
global:
  scrape_interval: 200ms
  scrape_timeout: 150ms
scrape_configs:
  - job_name: engine
    static_configs:
      - targets: ["127.0.0.1:%d"]
"""


class Prometheus:
    def __init__(self, target_port):
        self.dir = tempfile.mkdtemp(prefix="prom-")
        self.port = free_port()
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(CONFIG % target_port)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def query(self, expr):
        """The instant vector `expr` evaluates to, as {labels-json: value}."""
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (
            self.port, urllib.parse.urlencode({"query": expr}))
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1])
                for s in body["data"]["result"]}

    def wait_for(self, expr, value):
        """Waits (bounded) until `expr` is one sample equal to `value`; returns it."""
        deadline = time.monotonic() + WAIT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("prometheus exited %s: %s" % (self.proc.returncode, self.log_text()))
            try:
                last = self.query(expr)
                if list(last.values()) == [value]:
                    return last
            except (OSError, ValueError) as e:  # not listening yet
                last = e
            time.sleep(0.1)
        pytest.fail("%s never became %s (last %r); log: %s" % (expr, value, last, self.log_text()))

    def log_text(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Qmp:
    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=10)
        self.file = self.sock.makefile("rwb")
        assert "QMP" in json.loads(self.file.readline())
        assert self.request({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}) == {"return": {}}

    def request(self, msg):
        self.file.write(json.dumps(msg).encode())
        self.file.flush()
        return json.loads(self.file.readline())

    def close(self):
        self.file.close()
        self.sock.close()


@pytest.fixture
def engine_and_prometheus():
    eng = Engine(qmp=["tcp:127.0.0.1:0"], jsonrpc=["tcp:127.0.0.1:0"], metrics=True)
    prom = None
    try:
        prom = Prometheus(eng.metrics[1])
        yield eng, prom
    finally:
        if prom is not None:
            prom.stop()
        stop_engine(eng)


def test_prometheus_reads_back_the_exact_counts(engine_and_prometheus):
    eng, prom = engine_and_prometheus
    prom.wait_for('up{job="engine"}', 1.0)
    qmp = Qmp(eng.qmp["tcp"])
    try:
        for i in range(1, 8):
            assert qmp.request({"execute": "counter-add", "arguments": {"delta": 1}}) == {"return": {"value": i}}
        for _ in range(3):
            assert qmp.request({"exec-oob": "ping"}) == {"return": {}}
        assert qmp.request({"execute": "nope"})["error"]["class"] == "CommandNotFound"
    finally:
        qmp.close()
    with socket.create_connection(eng.jsonrpc["tcp"], timeout=10) as rpc:
        f = rpc.makefile("rwb")
        for _ in range(2):
            f.write(b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
            f.flush()
            assert json.loads(f.readline())["result"] == {}
        f.close()  # the socket stays open while its file object is

    prom.wait_for('engine_requests_total{dialect="qmp",lane="inband",command="counter-add"}', 7.0)
    prom.wait_for('engine_requests_total{dialect="qmp",lane="oob",command="ping"}', 3.0)
    prom.wait_for('engine_requests_total{dialect="jsonrpc",lane="oob",command="ping"}', 2.0)
    prom.wait_for('engine_errors_total{class="CommandNotFound"}', 1.0)
    prom.wait_for('engine_executor_jobs_total', 7.0)
    prom.wait_for('engine_request_duration_seconds_count{lane="inband",stage="service"}', 7.0)
    prom.wait_for('engine_request_duration_seconds_count{lane="oob",stage="service"}', 5.0)
    prom.wait_for('engine_connections_accepted_total', 2.0)
    prom.wait_for('engine_connections_open', 0.0)
    # Prometheus' own view of a histogram: every OOB reply was well under 10 s.
    prom.wait_for('engine_request_duration_seconds_bucket{lane="oob",stage="service",le="10.0"}', 5.0)
    quantile = prom.query('histogram_quantile(0.5, engine_request_duration_seconds_bucket{lane="oob"})')
    assert len(quantile) == 1 and 0 < list(quantile.values())[0] <= 10.0, quantile
