"""The engine's QMP dialect driven by QEMU's own async Python client, qemu.qmp."""

import asyncio
import time

import pytest
from qemu.qmp import EventListener, ExecuteError, QMPClient

T = 10.0  # bound on every single await


def run(coro, timeout=40.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def connected(address):
    client = QMPClient("interop")
    await asyncio.wait_for(client.connect(address), T)
    return client


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_connect_negotiates_oob_and_query_version(engine, transport):
    async def body():
        client = await connected(engine.qmp[transport])
        try:
            greeting = client.greeting
            assert greeting is not None
            caps = list(greeting.QMP.capabilities)
            assert caps == ["oob"]
            version = greeting._raw["QMP"]["version"]
            assert version == {"qemu": {"micro": 0, "minor": 1, "major": 0},
                               "package": "ooblane 0.1.0"}
            assert await asyncio.wait_for(client.execute("query-version"), T) == version
            # qemu.qmp enables every capability the greeting offers; exec-oob only
            # works once "oob" was negotiated, so this proves the negotiation.
            assert await asyncio.wait_for(client.execute("ping", oob=True), T) == {}
        finally:
            await asyncio.wait_for(client.disconnect(), T)
    run(body())


def test_oob_overtakes_a_stalled_executor(engine):
    async def body():
        client = await connected(engine.qmp["tcp"])
        try:
            stall = asyncio.ensure_future(client.execute("stall", {"timeout-ms": 30000}))
            deadline = time.monotonic() + T
            while True:
                stats = await asyncio.wait_for(client.execute("query-stats", oob=True), T)
                if stats["executor"]["busy-for-us"] is not None:
                    break
                assert time.monotonic() < deadline, "executor never became busy: %r" % stats
                assert not stall.done(), stall
                await asyncio.sleep(0.01)
            assert await asyncio.wait_for(client.execute("ping", oob=True), T) == {}
            assert not stall.done(), "stall finished before release"
            assert await asyncio.wait_for(client.execute("release", oob=True), T) == {"released": 1}
            assert await asyncio.wait_for(stall, T) == {"released": True}
        finally:
            await asyncio.wait_for(client.disconnect(), T)
    run(body())


def test_execute_errors(engine):
    async def body():
        client = await connected(engine.qmp["unix"])
        try:
            with pytest.raises(ExecuteError) as err:
                await asyncio.wait_for(client.execute("no-such-command"), T)
            assert err.value.error_class == "CommandNotFound"
            assert err.value.error.error.desc == "The command no-such-command has not been found"

            with pytest.raises(ExecuteError) as err:
                await asyncio.wait_for(client.execute("work", {"us": 1}, oob=True), T)
            assert err.value.error_class == "GenericError"
            assert err.value.error.error.desc == "The command work does not support OOB"

            # the session is still fine afterwards
            assert await asyncio.wait_for(client.execute("counter-add", {"delta": 5}), T) == {"value": 5}
        finally:
            await asyncio.wait_for(client.disconnect(), T)
    run(body())


def test_event_reaches_the_listener(engine):
    async def body():
        client = await connected(engine.qmp["tcp"])
        other = await connected(engine.qmp["unix"])
        try:
            mine = EventListener("INTEROP_EVENT")
            theirs = EventListener()  # all events
            client.register_listener(mine)
            other.register_listener(theirs)
            data = {"n": 7, "s": "text", "nested": {"list": [1, None, True]}}
            assert await asyncio.wait_for(
                client.execute("emit-event", {"event": "INTEROP_EVENT", "data": data}), T) == {}
            for listener in (mine, theirs):
                event = await asyncio.wait_for(listener.get(), T)
                assert event["event"] == "INTEROP_EVENT"
                assert event["data"] == data
                assert set(event["timestamp"]) == {"seconds", "microseconds"}
            client.remove_listener(mine)
            other.remove_listener(theirs)
        finally:
            await asyncio.wait_for(client.disconnect(), T)
            await asyncio.wait_for(other.disconnect(), T)
    run(body())


def test_thousand_concurrent_counter_adds(engine):
    async def body():
        client = await connected(engine.qmp["tcp"])
        try:
            replies = await asyncio.wait_for(asyncio.gather(
                *(client.execute("counter-add", {"delta": 1}) for _ in range(1000))), 30)
            assert sorted(r["value"] for r in replies) == list(range(1, 1001))
            assert all(set(r) == {"value"} for r in replies)
            assert await asyncio.wait_for(client.execute("query-counter", oob=True), T) == {"value": 1000}
        finally:
            await asyncio.wait_for(client.disconnect(), T)
    run(body())
