"""qmp-shell (shipped with qemu.qmp) driven non-interactively against the engine.

qmp-shell reads commands in its `name key=value ...` shorthand from stdin; with -v it
echoes the JSON it sends. It has no raw-JSON input mode: a `{"execute": ...}` line is
split on whitespace like any other line and rejected with "Expected a key=value pair"
(client-side, nothing is sent), which is checked below too.
"""

import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TRANSCRIPT = os.path.join(HERE, "qmp-shell-transcript.txt")

SCRIPT = "\n".join([
    "query-version",
    "counter-add delta=3",
    "counter-add delta=-1",
    '{"execute": "ping"}',
    "emit-event event=SHELL_EVENT data={\"k\":[1,2]}",
    "query-counter",
    "",  # a blank line makes qmp-shell print the events received so far
    "no-such-command",
    "work us=1 extra=2",
    "work us=1",
]) + "\n"

VERSION = {"qemu": {"micro": 0, "minor": 1, "major": 0}, "package": "ooblane 0.1.0"}


def run_shell(address, home):
    cmd = [sys.executable, "-m", "qemu.qmp.qmp_shell", "-v", address]
    proc = subprocess.run(cmd, input=SCRIPT, capture_output=True, text=True, timeout=20,
                          env={**os.environ, "HOME": home})
    return cmd, proc


def replies(stdout):
    """The JSON replies in qmp-shell's output (lines after the prompt that start with {")."""
    out = []
    for line in stdout.splitlines():
        while line.startswith("(QEMU) "):
            line = line[len("(QEMU) "):]
        if line.startswith('{"'):
            out.append(json.loads(line))
    return out


def check(stdout, stderr):
    got = replies(stdout)
    sent = [m for m in got if "execute" in m]
    answers = [m for m in got if "execute" not in m]
    assert [m["execute"] for m in sent] == [
        "query-version", "counter-add", "counter-add", "emit-event", "query-counter",
        "no-such-command", "work", "work"]
    assert sent[1]["arguments"] == {"delta": 3}
    assert sent[3]["arguments"] == {"event": "SHELL_EVENT", "data": {"k": [1, 2]}}
    assert answers == [
        {"return": VERSION},
        {"return": {"value": 3}},
        {"return": {"value": 2}},
        {"return": {}},
        {"return": {"value": 2}},
        {"error": {"class": "CommandNotFound",
                   "desc": "The command no-such-command has not been found"}},
        {"error": {"class": "GenericError", "desc": answers[6]["error"]["desc"]}},
        {"return": {}},
    ]
    assert "extra" in answers[6]["error"]["desc"], answers[6]
    # events are printed as Python dicts after the blank line
    event_lines = [l for l in stdout.splitlines() if "'event': 'SHELL_EVENT'" in l]
    assert len(event_lines) == 1, stdout
    assert "'data': {'k': [1, 2]}" in event_lines[0]
    assert "Connected to QEMU 0.1.0" in stdout
    # the raw JSON line is refused by the shell itself
    assert "Expected a key=value pair, got '\"ping\"}'" in stderr


def test_qmp_shell_over_tcp(engine, sockdir):
    host, port = engine.qmp["tcp"]
    cmd, proc = run_shell("%s:%d" % (host, port), sockdir)
    assert proc.returncode == 0, proc.stderr
    check(proc.stdout, proc.stderr)
    with open(TRANSCRIPT, "w", encoding="utf-8") as f:
        # The event timestamp is redacted so that the recorded file only changes when
        # the behaviour does.
        stdout = re.sub(r"'timestamp': \{'seconds': \d+, 'microseconds': \d+\}",
                        "'timestamp': {'seconds': S, 'microseconds': U}", proc.stdout)
        f.write("$ python -m qemu.qmp.qmp_shell -v 127.0.0.1:PORT < stdin\n")
        f.write("# stdin:\n")
        for line in SCRIPT.splitlines():
            f.write("#   %s\n" % line)
        f.write("# stdout:\n")
        f.write(stdout)
        f.write("\n# stderr:\n")
        f.write(proc.stderr)


def test_qmp_shell_over_unix(engine, sockdir):
    cmd, proc = run_shell(engine.qmp["unix"], sockdir)
    assert proc.returncode == 0, proc.stderr
    check(proc.stdout, proc.stderr)
