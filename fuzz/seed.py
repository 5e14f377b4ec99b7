#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/ (idempotent: a seed
is named after its content's hash, so re-running adds nothing new).

Seeds come from the recorded QEMU 7.2 session corpus (tests/data/qemu/corpus.json: every input
byte sequence; transcript.json: QEMU's own replies, valid JSON of every shape it produces),
plus a few JSON-RPC requests and edge cases (depth limit, escapes, big numbers) the recording
has none of. Input layouts follow each target's doc comment: framer and pipeline take two
control bytes before the stream."""

import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent
DATA = ROOT.parent / "tests" / "data" / "qemu"

# Chunk-size bytes for the framer and pipeline seeds: 1-byte reads, short reads, whole input.
CHUNKS = (0, 6, 255)
# Pipeline session selectors (see fuzz_targets/pipeline.rs): QMP with oob, QMP negotiating,
# JSON-RPC.
QMP_OOB, QMP_NEGOTIATING, JSONRPC = 0, 1, 2

EXTRA = [
    b'{"method":"echo","params":["x"],"id":1}',
    b'{"method":"ping","params":[],"id":"a"}',
    b'{"jsonrpc":"2.0","method":"counter-add","params":{"delta":2},"id":7}',
    b'{"method":"query-counter","params":[],"id":null}',
    b'[{"method":"echo","params":[],"id":1}]',
    b'{"exec-oob":"ping","id":{"a":[1,2.5e3,-0,true,null]}}',
    b'{"execute":"counter-add","arguments":{"delta":99999999999999999999},"id":1}',
    b'{"execute":"query-stats","id":"\\u00e9\\ud83d\\ude00\\n"}',
    b'{"execute":"emit-event","arguments":{"event":"X","data":{"k":1}}}',
    b'{"a":1,"a":2}',
    b'{"a":{"b":1,"b":2}}',
    b"[" * 1024 + b"]" * 1024,
    b"[" * 1025 + b"]" * 1025,
    b'"\xc0\x80"',
    b"1e400",
    b'"\\ud800"',
]


def case_inputs():
    corpus = json.loads((DATA / "corpus.json").read_text())
    for case in corpus["cases"]:
        steps = []
        for step in case["steps"]:
            if isinstance(step, str):
                steps.append(step.encode())
            elif "hex" in step:
                steps.append(bytes.fromhex(step["hex"]))
            else:
                steps.append(step["text"].encode())  # sent on a second connection
        yield case["negotiate"], steps


def replies():
    transcript = json.loads((DATA / "transcript.json").read_text())
    yield transcript["greeting"]["raw"].encode()
    for case in transcript["cases"]:
        for reply in case.get("replies", []):
            if isinstance(reply, dict) and "raw" in reply:
                yield reply["raw"].encode()


def write(target, data):
    folder = ROOT / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / hashlib.sha1(data).hexdigest()
    if not path.exists():
        path.write_bytes(data)


def main():
    messages = set(EXTRA) | set(replies())
    for negotiate, steps in case_inputs():
        messages.update(steps)
        stream = b"".join(steps)
        kind = QMP_NEGOTIATING if negotiate == "none" else QMP_OOB
        for chunk in CHUNKS:
            write("framer", bytes([chunk, 255]) + stream)
            write("pipeline", bytes([kind, chunk]) + stream)
    for message in messages:
        write("peek", message)
        write("differential", message)
        write("framer", bytes([255, 255]) + message)
    for message in EXTRA[:5]:
        write("pipeline", bytes([JSONRPC, 255]) + message + b"\n")
    for target in ("framer", "peek", "pipeline", "differential"):
        count = len(list((ROOT / "corpus" / target).iterdir()))
        print(f"seed: {target}: {count} inputs in fuzz/corpus/{target}")


if __name__ == "__main__":
    main()
