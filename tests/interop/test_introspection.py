"""`query-qmp-schema` against a live QEMU 7.2: QEMU's own SchemaInfo entries for comparable
commands (`query-version`, `query-commands`, `qmp_capabilities`, `query-status`) and its
`SHUTDOWN` event are compared key by key with the engine's: same keys, same kinds of values,
every referenced type present, `allow-oob` written only when true. Libvirt-style path
queries (`query-version/ret-type/qemu/major`) resolve the same way on both.

QEMU is started as tests/data/qemu/record.py starts it (`-machine none -nodefaults -display
none`, a QMP chardev on loopback). Without QEMU (or $QEMU) the QEMU comparisons are skipped;
the engine-only checks still run.
"""

import json
import os
import socket
import sys
import time

import pytest

from conftest import ROOT, Engine, stop_engine

sys.path.insert(0, os.path.join(ROOT, "tests", "data", "qemu"))
from record import Qemu  # noqa: E402

QEMU = os.environ.get("QEMU", "/usr/bin/qemu-system-x86_64")
HAVE_QEMU = os.access(QEMU, os.X_OK)
TIMEOUT = 10.0

# Commands and events both servers have, with the same meaning.
COMPARABLE = ["query-version", "query-commands", "qmp_capabilities", "SHUTDOWN"]


class Monitor:
    """A negotiated QMP connection; every read bounded."""

    def __init__(self, sock):
        sock.settimeout(TIMEOUT)
        self.file = sock.makefile("rwb")
        self.sock = sock
        greeting = json.loads(self.file.readline())
        assert "QMP" in greeting, greeting
        assert self.execute("qmp_capabilities") == {}

    def execute(self, command):
        self.file.write(json.dumps({"execute": command}).encode())
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" not in reply:
                assert "return" in reply, reply
                return reply["return"]

    def close(self):
        self.file.close()
        self.sock.close()


def fetch_schema(sock):
    monitor = Monitor(sock)
    try:
        return monitor.execute("query-qmp-schema")
    finally:
        monitor.close()


@pytest.fixture(scope="module")
def engine_schema():
    eng = Engine(qmp=["tcp:127.0.0.1:0"])
    try:
        yield by_name(fetch_schema(socket.create_connection(eng.qmp["tcp"], timeout=TIMEOUT)))
    finally:
        stop_engine(eng)


@pytest.fixture(scope="module")
def qemu_schema():
    if not HAVE_QEMU:
        pytest.skip("QEMU not installed at " + QEMU)
    qemu = Qemu(QEMU, aux=False)
    try:
        yield by_name(fetch_schema(qemu.connect(qemu.port, timeout=TIMEOUT)))
    finally:
        qemu.stop(grace=0)


def by_name(entries):
    table = {e["name"]: e for e in entries}
    assert len(table) == len(entries), "names are unique"
    return table


def kind(value):
    """The JSON kind of a value, for comparing shapes rather than contents."""
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")


def referenced(entry):
    names = [entry[k] for k in ("arg-type", "ret-type", "element-type") if k in entry]
    names += [m["type"] for m in entry.get("members", []) if "type" in m]
    return names


def resolve(schema, path):
    """libvirt's virQEMUQAPISchemaPathGet, in small: COMMAND/arg-type|ret-type/MEMBER/...,
    arrays traversed transparently, ^VALUE matches an enum value, !META a meta-type."""
    parts = path.split("/")
    entry = schema.get(parts[0])
    for part in parts[1:]:
        if entry is None:
            return None
        while entry["meta-type"] == "array":
            entry = schema[entry["element-type"]]
        if part.startswith("^"):
            if part[1:] not in entry.get("values", []):
                return None
        elif part.startswith("!"):
            if entry["meta-type"] != part[1:]:
                return None
        elif part in ("arg-type", "ret-type"):
            entry = schema.get(entry.get(part))
        else:
            member = next((m for m in entry.get("members", []) if m.get("name") == part), None)
            entry = schema.get(member["type"]) if member else None
    return entry


def shape(schema, name, depth=0):
    """An entry with type names replaced by the shapes they name, recursively: what must
    agree between QEMU and the engine (opaque type numbers differ, by design)."""
    entry = schema[name]
    out = {}
    for key, value in sorted(entry.items()):
        if key == "name" and entry["meta-type"] not in ("command", "event", "builtin"):
            continue  # opaque numbers
        if key in ("arg-type", "ret-type", "element-type") and depth < 8:
            out[key] = shape(schema, value, depth + 1)
        elif key == "members" and entry["meta-type"] == "object" and depth < 8:
            out[key] = [{k: (shape(schema, v, depth + 1) if k == "type" else v)
                         for k, v in sorted(m.items())} for m in value]
        else:
            out[key] = value
    return out


def test_every_reference_resolves_and_allow_oob_is_only_written_when_true(engine_schema):
    for entry in engine_schema.values():
        for name in referenced(entry):
            assert name in engine_schema, (name, entry)
        if entry["meta-type"] == "command":
            assert entry.get("allow-oob", True) is True, entry


@pytest.mark.parametrize("name", COMPARABLE)
def test_comparable_entries_have_qemus_keys_and_kinds(engine_schema, qemu_schema, name):
    ours, theirs = engine_schema[name], qemu_schema[name]
    assert sorted(ours) == sorted(theirs), (ours, theirs)
    for key in ours:
        assert kind(ours[key]) == kind(theirs[key]), key
        if key in ("arg-type", "ret-type"):
            a, b = engine_schema[ours[key]], qemu_schema[theirs[key]]
            assert a["meta-type"] == b["meta-type"], (a, b)
            assert sorted(a) == sorted(b), (a, b)


def test_query_version_and_shutdown_match_qemu_exactly_up_to_type_names(engine_schema, qemu_schema):
    # Member order aside (QEMU keeps declaration order, schemars sorts), these are the same
    # declarations, so the resolved shapes are equal.
    def sort_members(value):
        if isinstance(value, dict):
            out = {k: sort_members(v) for k, v in value.items()}
            if isinstance(out.get("members"), list):
                out["members"] = sorted(out["members"], key=lambda m: json.dumps(m, sort_keys=True))
            return out
        if isinstance(value, list):
            return [sort_members(v) for v in value]
        return value
    for name in ("query-version", "SHUTDOWN"):
        ours = sort_members(shape(engine_schema, name))
        theirs = sort_members(shape(qemu_schema, name))
        if name == "SHUTDOWN":
            # QEMU's `reason` is its ShutdownCause enum; the engine's is free text.
            theirs["arg-type"]["members"] = [
                dict(m, type=ours["arg-type"]["members"][1]["type"]) if m["name"] == "reason" else m
                for m in theirs["arg-type"]["members"]]
        assert ours == theirs


def test_optional_members_use_qemus_absent_marker(engine_schema, qemu_schema):
    theirs = resolve(qemu_schema, "qmp_capabilities/arg-type")["members"]
    ours = resolve(engine_schema, "qmp_capabilities/arg-type")["members"]
    assert [sorted(m) for m in ours] == [sorted(m) for m in theirs] == [["default", "name", "type"]]
    assert ours[0]["default"] is None and theirs[0]["default"] is None


@pytest.mark.parametrize("path,meta", [
    ("query-version/ret-type/qemu/major", "builtin"),
    ("query-version/ret-type/package", "builtin"),
    ("query-commands/ret-type/name", "builtin"),
    ("qmp_capabilities/arg-type/enable/^oob", "enum"),
    ("query-version/ret-type/qemu/!object", "object"),
])
def test_libvirt_path_queries_resolve_on_both(engine_schema, qemu_schema, path, meta):
    ours, theirs = resolve(engine_schema, path), resolve(qemu_schema, path)
    assert ours is not None and theirs is not None, path
    assert ours["meta-type"] == theirs["meta-type"] == meta
    if meta == "builtin":
        assert ours == theirs


def test_unknown_paths_resolve_on_neither(engine_schema, qemu_schema):
    for path in ("query-version/ret-type/nope", "qmp_capabilities/arg-type/enable/^bogus",
                 "no-such-command/arg-type"):
        assert resolve(engine_schema, path) is None and resolve(qemu_schema, path) is None, path


def test_allow_oob_commands_look_like_qemus(engine_schema, qemu_schema):
    # QEMU 7.2's allow-oob commands (yank, migrate-pause, ...) carry "allow-oob": true.
    qemu_oob = [e for e in qemu_schema.values() if e.get("allow-oob")]
    assert qemu_oob, "QEMU lists allow-oob commands"
    ours = engine_schema["ping"]
    assert sorted(ours) == sorted(qemu_oob[0]) and ours["allow-oob"] is True
