"""Differential check: replay the protocol-level corpus QEMU 7.2 answered
(tests/data/qemu/transcript.json, recorded by tests/data/qemu/record.py) against the
engine's QMP TCP listener and compare reply by reply.

Compared per case, per connection: the number of replies, their order, for each reply its
kind (`return`, `error` with its `class`, or an event with its name and `data`) and the
presence and parsed value of `id` (numbers compare by value, so `1e3` and `1000` are equal,
`true` and `1` are not). Not compared: `return` values (the command sets differ), error
`desc` texts, timestamps, the greeting's version.

The bytes replayed are the ones recorded as sent to QEMU, with QEMU-only commands mapped to
engine commands of the same shape (REWRITES / CASE_REWRITES below). Cases that cannot be
mapped are in SKIPPED, and every place the engine deliberately answers differently from
QEMU is in KNOWN_DIFFERENCES with the engine's exact expected answer and the reason; any
other mismatch fails. When /usr/bin/qemu-system-x86_64 (or $QEMU) exists, a few cases are
also recorded live with record.py and compared with the stored transcript and the engine.
"""

import concurrent.futures
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT, Engine, stop_engine

DATA = os.path.join(ROOT, "tests", "data", "qemu")
TRANSCRIPT = os.path.join(DATA, "transcript.json")
CORPUS = os.path.join(DATA, "corpus.json")
RECORD = os.path.join(DATA, "record.py")
QEMU = os.environ.get("QEMU", "/usr/bin/qemu-system-x86_64")

# Replies may echo ids nested ~1024 deep; the json module recurses.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))

NEGOTIATE = {
    "none": None,
    "plain": b'{"execute":"qmp_capabilities"}\r\n',
    "oob": b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}\r\n',
}

# ---------------------------------------------------------------------------------------
# Mapping QEMU-only commands onto engine commands of the same shape (applied in order to
# the raw bytes of every step).
REWRITES = [
    # yank: allow-oob, returns {} (the corpus always passes an empty instance list)
    # -> ping: allow-oob, no arguments, returns {}.
    (b'"yank","arguments":{"instances":[]}', b'"ping"'),
    (b'"yank"', b'"ping"'),
    # query-status: in-band, no arguments, returns an object -> query-version.
    (b'"query-status"', b'"query-version"'),
    # stop / cont: in-band, emit STOP / RESUME, return {} -> emit-event of the same event.
    (b'"execute":"stop"', b'"execute":"emit-event","arguments":{"event":"STOP"}'),
    (b'"execute":"cont"', b'"execute":"emit-event","arguments":{"event":"RESUME"}'),
]

# human-monitor-command ('command-line': str mandatory, 'cpu-index': int optional) has no
# twin; each case is mapped to the same argument error on an engine command
# (counter-add: 'delta' int mandatory; stall: 'timeout-ms' int optional).
CASE_REWRITES = {
    "args_hmc_missing": ['{"execute":"counter-add","id":2}\r\n'],
    "args_hmc_wrong_type": ['{"execute":"counter-add","arguments":{"delta":"5"},"id":3}\r\n'],
    "args_hmc_ok": ['{"execute":"counter-add","arguments":{"delta":0},"id":4}\r\n'],
    "args_hmc_wrong_type_and_extra":
        ['{"execute":"counter-add","arguments":{"delta":"5","zz":1},"id":5}\r\n'],
    "args_hmc_null": ['{"execute":"counter-add","arguments":{"delta":null},"id":6}\r\n'],
    "args_hmc_optional_wrong_type":
        ['{"execute":"stall","arguments":{"timeout-ms":"x"},"id":7}\r\n'],
    # split over writes, so REWRITES cannot see "query-status" whole
    "order_split_request": ['{"execute":"query-', 'version","id":1', '}\r\n'],
    "dup_in_arguments":
        ['{"execute":"counter-add","arguments":{"delta":1,"delta":2},"id":3}\r\n'],
}

SKIPPED = {
    "oob_exec_oob_yank_missing_args":
        "no allow-oob engine command has a mandatory argument (yank's 'instances')",
}

# Cases that run alone on their own engine (quit ends it) or while no other connection is
# negotiated (events go to every negotiated session).
OWN_ENGINE = {"quit", "quit_oob_session"}


# ---------------------------------------------------------------------------------------
# Signatures
def norm(v):
    """A parsed JSON value, comparable strictly (True != 1) but numbers by value."""
    if isinstance(v, bool):
        return ("bool", v)
    if v is None:
        return ("null",)
    if isinstance(v, (int, float)):
        return ("num", v)
    if isinstance(v, str):
        return ("str", v)
    if isinstance(v, list):
        return ("list", tuple(norm(x) for x in v))
    return ("obj", tuple(sorted((k, norm(x)) for k, x in v.items())))


def line_sig(raw, conn):
    """Signature of one reply line (str, without CRLF)."""
    try:
        j = json.loads(raw)
    except ValueError:
        return (conn, "unparsable", raw)
    if not isinstance(j, dict):
        return (conn, "non-object", raw)
    if "error" in j:
        kind = ("error", j["error"].get("class"))
    elif "return" in j:
        kind = ("return",)
    elif "event" in j:
        kind = ("event", j["event"], norm(j["data"]) if "data" in j else "no-data")
    else:
        kind = ("other", sorted(j))
    ident = ("id", norm(j["id"])) if "id" in j else ("no-id",)
    return (conn,) + kind + (ident,)


def qemu_lines(case):
    """[(conn, raw)] of QEMU's replies to the steps, in arrival order."""
    return [(r.get("conn", "main"), r["raw"]) for r in case.get("replies", [])]


def signature(lines):
    """Per connection, the list of reply signatures (order across connections is not
    defined)."""
    out = {}
    for conn, raw in lines:
        out.setdefault(conn, []).append(line_sig(raw, conn))
    return out


def qemu_signature(case):
    return signature(qemu_lines(case))


def sig_of(*items):
    """Shorthand for the KNOWN_DIFFERENCES table: items are
    ("R", id) / ("E", class, id) / ("EV", name, data) with id NOID for none."""
    out = []
    for it in items:
        conn = "main"
        if it[0] == "R":
            kind = ("return",)
            ident = it[1]
        elif it[0] == "E":
            kind = ("error", it[1])
            ident = it[2]
        else:
            kind = ("event", it[1], norm(it[2]) if it[2] is not None else "no-data")
            ident = NOID
        out.append((conn,) + kind + ((("no-id",) if ident is NOID else ("id", norm(ident))),))
    return {"main": out} if out else {}


NOID = object()
PROBE = ("R", "probe")
PARSE = ("E", "GenericError", NOID)

# ---------------------------------------------------------------------------------------
# Where the engine deliberately answers differently: case -> (reason, the engine's exact
# answer). The test also checks QEMU's recorded answer still differs, so a stale entry
# fails too.
ONE_ERROR = "docs/protocol.md#bad-input: one bad message gives one error, not a cascade; " \
    "QEMU's lexer reports the bad token and then one more error per orphaned token"
KNOWN_DIFFERENCES = {
    "quit": ("docs/protocol.md#demo-command-set: quit replies {} and then sends SHUTDOWN; "
             "QEMU 7.2 sends the SHUTDOWN event first", sig_of(
                 ("R", "q"), ("EV", "SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"}))),
    "quit_oob_session": ("as quit", sig_of(
        ("R", "q"), ("EV", "SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"}))),
    "malformed_single_quotes": (
        "QEMU accepts single-quoted strings as an extension; the engine speaks strict JSON",
        sig_of(PARSE)),
    "bytes_overlong_nul_in_string": (
        "QEMU accepts the overlong C0 80 as NUL (modified UTF-8); the engine rejects invalid "
        "UTF-8 (docs/protocol.md#bad-input)", sig_of(PARSE, PROBE)),
    "id_float_1e400": (
        "1e400 overflows a double: QEMU echoes it as `inf`, which is not JSON (its reply is "
        "unparsable); the engine rejects the request as malformed", sig_of(PARSE)),
    "malformed_single_quote_escape": (
        "single quotes are a QEMU extension (see malformed_single_quotes); the engine ends the "
        "broken string at the raw CR and gives one error", sig_of(PARSE)),
    "malformed_unterminated_string_no_newline": (
        ONE_ERROR + "; the open string swallows the next request in both", sig_of(PARSE, PROBE)),
    "malformed_leading_zero": (ONE_ERROR, sig_of(PARSE, PROBE)),
    "malformed_nan": (ONE_ERROR, sig_of(PARSE, PROBE)),
    "malformed_percent": (ONE_ERROR, sig_of(PARSE, PROBE)),
    "bytes_ff_in_string": (ONE_ERROR, sig_of(PARSE, PROBE)),
    "bytes_control_inside_string": (ONE_ERROR, sig_of(PARSE, PROBE)),
    "bytes_tab_inside_string": (ONE_ERROR, sig_of(PARSE, PROBE)),
    "bytes_nul_inside_string": (ONE_ERROR, sig_of(PARSE, PROBE)),
    "bytes_control_inside_object": (ONE_ERROR, sig_of(PARSE, PROBE)),
    "malformed_lexer_error_in_nested_array": (ONE_ERROR, sig_of(PARSE, PROBE)),
    "nest_arrays_1025": (ONE_ERROR + " (QEMU: one per '[' beyond the depth limit)",
                         sig_of(PARSE, PROBE)),
    "nest_id_depth_1025": (ONE_ERROR, sig_of(PARSE, PROBE)),
    "nest_arguments_object_1100": (ONE_ERROR, sig_of(PARSE, PROBE)),
    "id_beyond_uint64": (
        "the engine echoes the id from its own bytes (99999999999999999999); QEMU re-serialises "
        "it as a double (1e+20)", sig_of(("E", "CommandNotFound", 99999999999999999999))),
    "id_int64_min_minus_1": (
        "as id_beyond_uint64 (QEMU: -9.2233720368547758e+18)",
        sig_of(("E", "CommandNotFound", -9223372036854775809))),
}

# Cases where the order of replies is not defined (docs/protocol.md#ordering-and-lanes: an OOB
# reply may overtake earlier in-band replies; parse errors take the in-band lane): compared as a
# multiset, plus the order of the in-band replies (those without the OOB id "y"). QEMU's
# own order varies between runs here.
ORDER_FREE = {
    "oob_pipelined_inband_then_oob": "the OOB reply may overtake in-band replies",
    "oob_pipelined_error_then_oob": "parse error (in-band lane) vs OOB reply",
}

# Suspected engine bugs: the engine's answer differs from QEMU's and from docs/protocol.md.
# Each is an xfail(strict) asserting what docs/protocol.md asks for, so a fix shows up as XPASS.
ENGINE_BUGS = {}


# ---------------------------------------------------------------------------------------
# Replaying
def step_bytes(step):
    if isinstance(step, str):
        return step.encode("utf-8"), "main"
    conn = step.get("conn", "main")
    if "hex" in step:
        return bytes.fromhex(step["hex"]), conn
    return step["text"].encode("utf-8"), conn


def mapped_steps(case):
    """[(bytes, conn)] to send to the engine for this case."""
    steps = [s["sent"] for s in case["steps"]]
    if case["name"] in CASE_REWRITES:
        steps = CASE_REWRITES[case["name"]]
        assert len(steps) == len(case["steps"])
    out = []
    for step in steps:
        data, conn = step_bytes(step)
        for old, new in REWRITES:
            data = data.replace(old, new)
        out.append((data, conn))
    return out


class Conn:
    def __init__(self, name, address):
        self.name = name
        self.sock = socket.create_connection(address, timeout=5)
        self.buf = b""
        self.eof = False
        self.lines = []

    def pump(self, timeout):
        """Read what arrives within `timeout` s; True if anything did."""
        if self.eof:
            return False
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not ready:
            return False
        try:
            data = self.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return True
        self.buf += data
        while b"\r\n" in self.buf:
            line, self.buf = self.buf.split(b"\r\n", 1)
            self.lines.append(line.decode("utf-8", "backslashreplace"))
        return True

    def wait_lines(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and not self.eof and time.monotonic() < deadline:
            self.pump(deadline - time.monotonic())
        return len(self.lines) >= n

    def close(self):
        self.sock.close()


def replay_case(address, case, quiet=0.03, final_quiet=0.15, step_timeout=1.0):
    """Replay one case; returns {"lines": [(conn, raw)], "neg": [...], "greeting": raw}."""
    steps = mapped_steps(case)
    qemu_steps = case["steps"]
    conns = {"main": Conn("main", address)}
    try:
        main = conns["main"]
        assert main.wait_lines(1, 5), "no greeting"
        greeting = main.lines.pop(0)
        neg = []
        if NEGOTIATE[case["negotiate"]] is not None:
            main.sock.sendall(NEGOTIATE[case["negotiate"]])
            assert main.wait_lines(1, 5), "no reply to the negotiation"
            neg = [main.lines.pop(0)]
        if any(c == "aux" for _, c in steps):
            aux = conns["aux"] = Conn("aux", address)
            assert aux.wait_lines(1, 5), "no greeting on aux"
            aux.lines.pop(0)
            aux.sock.sendall(NEGOTIATE["plain"])
            assert aux.wait_lines(1, 5) and json.loads(aux.lines.pop(0)) == {"return": {}}
        order = list(conns.values())
        arrived = []  # (conn, raw) in arrival order across connections
        seen = {c.name: 0 for c in order}
        expected = {c.name: 0 for c in order}

        def collect(timeout):
            got = False
            for c in order:
                if c.pump(timeout / len(order)):
                    got = True
                for raw in c.lines[seen[c.name]:]:
                    arrived.append((c.name, raw))
                seen[c.name] = len(c.lines)
            return got

        for i, (data, conn) in enumerate(steps):
            conns[conn].sock.sendall(data)
            if i < len(qemu_steps):
                for r in qemu_steps[i]["replies"]:
                    expected[r.get("conn", "main")] += 1
            deadline = time.monotonic() + step_timeout
            while any(seen[c] < expected[c] for c in seen) and time.monotonic() < deadline \
                    and not all(c.eof for c in order):
                collect(deadline - time.monotonic())
            window = final_quiet if i == len(steps) - 1 else quiet
            while collect(window):
                pass
        return {"lines": arrived, "neg": neg, "greeting": greeting,
                "eof": main.eof, "sent": [d for d, _ in steps]}
    finally:
        for c in conns.values():
            c.close()


def load_transcript():
    with open(TRANSCRIPT, "r", encoding="utf-8") as f:
        return json.load(f)


def replay_all(address, cases, own_engine):
    """Replay every case that is not skipped. Cases whose replies include no event run
    concurrently; event cases then run one at a time; OWN_ENGINE cases each get a fresh
    engine from own_engine(case), which must exit 0 by itself."""
    todo = [c for c in cases if c["name"] not in SKIPPED and "recorder_error" not in c]
    events = [c for c in todo if c["name"] not in OWN_ENGINE
              and any(" event" in l or '"event"' in l for _, l in qemu_lines(c))]
    parallel = [c for c in todo if c not in events and c["name"] not in OWN_ENGINE]
    results = {}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = {c["name"]: pool.submit(replay_case, address, c) for c in parallel}
        for name, fut in futures.items():
            results[name] = fut.result(timeout=60)
    for c in events:
        results[c["name"]] = replay_case(address, c)
    for c in todo:
        if c["name"] in OWN_ENGINE:
            eng = own_engine(c)
            try:
                results[c["name"]] = replay_case(eng.qmp["tcp"], c)
                results[c["name"]]["exit_code"] = eng.proc.wait(timeout=15)
            finally:
                eng.kill()
    for r in results.values():
        r["sig"] = signature(r["lines"])
    return results


# ---------------------------------------------------------------------------------------
# Tests
if not os.path.exists(TRANSCRIPT):
    pytest.skip("no recorded QEMU transcript at %s" % TRANSCRIPT, allow_module_level=True)

CASES = load_transcript()["cases"]
with open(CORPUS, "r", encoding="utf-8") as _f:
    # record.py's corpus marks the cases whose reply order QEMU itself does not fix
    for _c in json.load(_f)["cases"]:
        if _c.get("unordered"):
            ORDER_FREE.setdefault(_c["name"], "marked unordered in corpus.json")


def compare(name, engine_sig, qemu_sig):
    """Assert the engine's signature matches QEMU's, per the tables above."""
    if name in KNOWN_DIFFERENCES:
        reason, expected = KNOWN_DIFFERENCES[name]
        assert engine_sig == expected, "known difference (%s) changed" % reason
        assert qemu_sig != expected, "stale KNOWN_DIFFERENCES entry: QEMU now agrees"
    elif name in ENGINE_BUGS:
        assert engine_sig == ENGINE_BUGS[name][1]
    elif name in ORDER_FREE:
        assert set(engine_sig) == set(qemu_sig)
        for conn in qemu_sig:
            e, q = engine_sig[conn], qemu_sig[conn]
            assert sorted(e, key=repr) == sorted(q, key=repr)
            inband = lambda sig: [x for x in sig if x[-1] != ("id", ("str", "y"))]
            assert inband(e) == inband(q)
    else:
        assert engine_sig == qemu_sig


def own_engine(case):
    return Engine(qmp=["tcp:127.0.0.1:0"])


class LiveRecording:
    """record.py run in the background on LIVE_CASES (while the engine replay runs)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="qemu-live-")
        self.path = os.path.join(self.dir, "live.json")
        argv = [sys.executable, RECORD, "--qemu", QEMU, "--out", self.path, "--quiet", "0.25"]
        for name in LIVE_CASES:
            argv += ["--case", name]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def result(self, timeout=60):
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # record.py stops its QEMUs (PR_SET_PDEATHSIG) when killed
            self.proc.communicate(timeout=10)
            raise AssertionError("record.py took more than %d s" % timeout)
        assert self.proc.returncode == 0, err
        with open(self.path, "r", encoding="utf-8") as f:
            return {c["name"]: c for c in json.load(f)["cases"]}

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


HAVE_QEMU = os.access(QEMU, os.X_OK)


@pytest.fixture(scope="module")
def live_and_replayed():
    live = LiveRecording() if HAVE_QEMU else None
    try:
        eng = Engine(qmp=["tcp:127.0.0.1:0"])
        try:
            results = replay_all(eng.qmp["tcp"], CASES, own_engine)
        finally:
            stop_engine(eng)
        yield live, results
    finally:
        if live is not None:
            live.cleanup()


@pytest.fixture(scope="module")
def replayed(live_and_replayed):
    return live_and_replayed[1]


def params():
    out = []
    for case in CASES:
        name = case["name"]
        marks = []
        if name in ENGINE_BUGS:
            marks.append(pytest.mark.xfail(strict=True, reason="engine bug: " + ENGINE_BUGS[name][0]))
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def test_tables_name_real_cases():
    names = {c["name"] for c in CASES}
    for table in (KNOWN_DIFFERENCES, ENGINE_BUGS, ORDER_FREE, SKIPPED, CASE_REWRITES):
        assert set(table) <= names, set(table) - names
    # every case we replay was recorded from the current corpus
    with open(CORPUS, "r", encoding="utf-8") as f:
        corpus = {c["name"]: c for c in json.load(f)["cases"]}
    for case in CASES:
        assert case["name"] in corpus, case["name"]
        assert [s["sent"] for s in case["steps"]] == corpus[case["name"]]["steps"], \
            "transcript.json is stale for %s: re-run record.py" % case["name"]


@pytest.mark.parametrize("name", params())
def test_case_matches_qemu(replayed, name):
    case = next(c for c in CASES if c["name"] == name)
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    if "recorder_error" in case:
        pytest.skip("QEMU recording failed: " + case["recorder_error"])
    got = replayed[name]
    # the negotiation is answered alike (both {"return": {}} without id)
    assert [line_sig(r, "main") for r in got["neg"]] == \
        [line_sig(r["raw"], "main") for r in case.get("negotiate_reply", [])]
    if name in OWN_ENGINE:
        assert got["eof"] and case.get("eof"), "quit closes the connection"
        assert got["exit_code"] == 0
    compare(name, got["sig"], qemu_signature(case))


def test_greeting_has_qemus_shape(replayed):
    qemu = json.loads(load_transcript()["greeting"]["raw"])
    engine = json.loads(replayed["greeting"]["greeting"])
    assert list(engine) == list(qemu) == ["QMP"]
    assert list(engine["QMP"]) == list(qemu["QMP"]) == ["version", "capabilities"]
    assert engine["QMP"]["capabilities"] == qemu["QMP"]["capabilities"] == ["oob"]
    assert set(engine["QMP"]["version"]) == set(qemu["QMP"]["version"]) == {"qemu", "package"}
    assert list(engine["QMP"]["version"]["qemu"]) == list(qemu["QMP"]["version"]["qemu"])


# A few cases recorded live from the installed QEMU (a fresh QEMU per case, so kept short).
LIVE_CASES = ["neg_before_caps_query_version", "oob_exec_oob_unknown_command",
              "id_float_1e3", "shape_unknown_member", "malformed_abc", "order_no_separators",
              "event_stop_cont", "malformed_single_quotes"]


@pytest.mark.skipif(not HAVE_QEMU, reason="QEMU not installed at " + QEMU)
def test_live_qemu_recording_matches_transcript_and_engine(live_and_replayed):
    live_recording, replayed = live_and_replayed
    live = live_recording.result()
    stored = {c["name"]: c for c in CASES}
    assert set(LIVE_CASES) <= set(live)
    for name in LIVE_CASES:
        if name not in stored:
            continue
        assert qemu_signature(live[name]) == qemu_signature(stored[name]), name
        compare(name, replayed[name]["sig"], qemu_signature(live[name]))
