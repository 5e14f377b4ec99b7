"""The engine's JSON-RPC dialect driven by Open vSwitch's Python library (PyPI `ovs`):
ovs.jsonrpc.Session with its reconnect FSM, inactivity probes and multiple remotes."""

import time

import ovs.jsonrpc
import ovs.poller
import ovs.reconnect
import ovs.timeval
import ovs.vlog
import pytest

from conftest import free_port, start_engine_on_port, stop_engine

Message = ovs.jsonrpc.Message


class Driver:
    """Runs an ovs.jsonrpc.Session's loop and collects replies by id."""

    def __init__(self, session):
        self.session = session
        self.replies = {}
        self.others = []
        self.hooks = []  # called after every loop iteration

    def step(self, max_ms=50):
        s = self.session
        s.run()
        while True:
            msg = s.recv()
            if msg is None:
                break
            if msg.type in (Message.T_REPLY, Message.T_ERROR):
                self.replies[msg.id] = msg
            else:
                self.others.append(msg)
        for hook in self.hooks:
            hook()
        poller = ovs.poller.Poller()
        s.wait(poller)
        s.recv_wait(poller)
        poller.timer_wait(max_ms)
        poller.block()

    def until(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, "timed out after %.1f s waiting for %s" % (timeout, what)
            self.step()

    def run_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.step()

    def request(self, method, params, timeout=10.0):
        msg = Message.create_request(method, params)
        assert self.session.send(msg) == 0
        self.until(lambda: msg.id in self.replies, timeout, "the reply to %s" % method)
        return self.replies.pop(msg.id)

    def stats(self):
        return self.session.reconnect.get_stats(ovs.timeval.msec())


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_requests_and_errors(engine, transport):
    session = ovs.jsonrpc.Session.open(engine.jsonrpc_uri[transport])
    d = Driver(session)
    try:
        d.until(session.is_connected, 10, "the connection")
        for expected in (1, 2, 3):
            reply = d.request("counter-add", [{"delta": 1}])
            assert reply.type == Message.T_REPLY
            assert reply.result == {"value": expected}
            assert reply.error is None
        assert d.request("ping", []).result == {}
        assert d.request("query-counter", []).result == {"value": 3}
        assert d.request("echo", ["a", 1]).result == ["a", 1]

        err = d.request("no-such-method", [])
        assert err.type == Message.T_ERROR
        assert err.result is None
        assert set(err.error) == {"error", "details"}
        assert err.error["error"] == "CommandNotFound"
        assert err.error["details"] == "The command no-such-method has not been found"

        err = d.request("counter-add", [{"delta": "x"}])
        assert err.type == Message.T_ERROR
        assert err.error["error"] == "GenericError"
        assert d.request("query-counter", []).result == {"value": 3}
        assert d.others == []
    finally:
        session.close()


def test_probes_stall_and_reconnect_to_the_other_remote(sockdir):
    port_up, port_down = free_port(), free_port()
    while port_down == port_up:
        port_down = free_port()
    remote_up = "tcp:127.0.0.1:%d" % port_up
    remote_down = "tcp:127.0.0.1:%d" % port_down
    first = start_engine_on_port(port_up, workdir=sockdir)
    second = None
    session = ovs.jsonrpc.Session.open_multiple([remote_down, remote_up])
    try:
        session.reconnect.set_backoff(100, 500)  # keep the test short
        d = Driver(session)
        d.until(session.is_connected, 10, "a connection to %s" % remote_up)
        assert session.get_name() == remote_up
        assert d.stats().n_successful_connections == 1
        seqno = session.get_seqno()

        reply = d.request("counter-add", [{"delta": 1}])
        assert (reply.type, reply.result, reply.error) == (Message.T_REPLY, {"value": 1}, None)
        assert d.request("counter-add", [{"delta": 41}]).result == {"value": 42}

        # Inactivity probes while the executor is stalled: the engine answers `echo` on
        # its I/O thread, so the session must survive several probe intervals.
        interval = 1000  # ms; ovs enforces at least 1000
        session.reconnect.set_probe_interval(interval)
        assert session.reconnect.get_probe_interval() == interval
        stall = Message.create_request("stall", [{"timeout-ms": 30000}])
        assert session.send(stall) == 0

        probes_sent, probe_replies = [], []
        rpc = session.rpc
        real_send, real_recv = rpc.send, rpc.recv

        def send(msg):
            if msg.type == Message.T_REQUEST and msg.method == "echo":
                probes_sent.append(msg.id)
            return real_send(msg)

        def recv():
            error, msg = real_recv()
            if msg is not None and msg.type == Message.T_REPLY and msg.id == "echo":
                probe_replies.append(msg.result)
            return error, msg

        rpc.send, rpc.recv = send, recv
        disconnected = []
        d.hooks.append(lambda: disconnected.append(1) if not session.is_connected() else None)
        d.run_for(4.5 * interval / 1000)
        d.hooks.clear()
        assert disconnected == [], "session dropped while the executor was stalled"
        assert session.get_seqno() == seqno
        assert session.rpc is rpc
        assert len(probes_sent) >= 3, probes_sent
        assert probes_sent == ["echo"] * len(probes_sent)
        assert probe_replies == [[]] * len(probes_sent)
        assert stall.id not in d.replies  # still stalled

        assert d.request("release", []).result == {"released": 1}
        d.until(lambda: stall.id in d.replies, 10, "the stall reply")
        assert d.replies.pop(stall.id).result == {"released": True}
        assert d.request("query-counter", []).result == {"value": 42}

        # Fail over: stop this engine, start a fresh one on the other remote's port.
        stop_engine(first)
        second = start_engine_on_port(port_down, workdir=sockdir)
        d.until(lambda: session.is_connected() and session.get_name() == remote_down,
                15, "a reconnection to %s" % remote_down)
        assert session.get_seqno() > seqno
        assert d.stats().n_successful_connections == 2
        # a fresh engine: its counter starts at 0
        assert d.request("counter-add", [{"delta": 1}]).result == {"value": 1}
    finally:
        session.close()
        if first.returncode is None:
            stop_engine(first)
        if second is not None:
            stop_engine(second)
