#!/usr/bin/env python3
"""Record how a real QEMU QMP monitor answers the cases in corpus.json.

Python 3 standard library only. Usage:

    python3 tests/data/qemu/record.py --out /tmp/t.json
    python3 tests/data/qemu/record.py --qemu /usr/bin/qemu-system-x86_64 --case ids_

For every case a fresh QEMU is started (so state such as a `stop`, a `quit` or
a wedged lexer never leaks into the next case) and a fresh connection is opened:

  1. read the greeting line;
  2. send the negotiation given by the case ("none": nothing, "plain":
     `{"execute":"qmp_capabilities"}`, "oob": the same with
     `"arguments":{"enable":["oob"]}`) and record its reply;
  3. for each step, send its raw bytes in one write, then collect every
     `\\r\\n`-terminated line until 400 ms pass with nothing new (at most 5 s
     per step, see --quiet/--step-timeout).

Step forms in corpus.json:
  "text"                      sent as its UTF-8 encoding (JSON \\u escapes in
                              corpus.json give control bytes etc.)
  {"hex": "7b22..."}          raw bytes (invalid UTF-8)
  {"text": "..."}             same as a plain string
  {"text": "...", "conn": "aux"} / {"hex": ..., "conn": "aux"}
                              sent on a second monitor (QEMU is then started
                              with a second chardev/mon pair; the aux
                              connection is opened and negotiated "plain"
                              before the first step). Lines from both
                              connections are collected after every step and
                              tagged with "conn".

Optional case field "unordered": true marks cases whose reply order varies
between runs (an OOB reply racing in-band ones); compare those as a multiset.
Event "timestamp" values naturally differ between runs.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

NEGOTIATE = {
    "none": None,
    "plain": b'{"execute":"qmp_capabilities"}\r\n',
    "oob": b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}\r\n',
}


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def step_bytes(step):
    """Return (bytes, conn) for one corpus step."""
    if isinstance(step, str):
        return step.encode("utf-8"), "main"
    if isinstance(step, dict):
        conn = step.get("conn", "main")
        if "hex" in step:
            return bytes.fromhex(step["hex"]), conn
        if "text" in step:
            return step["text"].encode("utf-8"), conn
    raise ValueError("bad step: %r" % (step,))


# Parsed values nested deeper than this are left out of "json" (the "raw" line
# is always kept) so that readers with a recursion limit (serde_json: 128)
# can load the transcript.
MAX_STORED_DEPTH = 64


def depth(v):
    """Nesting depth of a parsed JSON value, iteratively."""
    best = 0
    stack = [(v, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, dict):
            best = max(best, d)
            stack.extend((y, d + 1) for y in x.values())
        elif isinstance(x, list):
            best = max(best, d)
            stack.extend((y, d + 1) for y in x)
    return best


def parse_line(raw):
    """raw: bytes without the trailing CRLF."""
    text = raw.decode("utf-8", errors="backslashreplace")
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return {"raw": text, "json": None, "json_error": "not parsable by Python's json"}
    d = depth(parsed)
    if d > MAX_STORED_DEPTH:
        return {"raw": text, "json": None,
                "json_error": "nesting depth %d > %d, see raw" % (d, MAX_STORED_DEPTH)}
    return {"raw": text, "json": parsed}


class Conn:
    def __init__(self, name, sock):
        self.name = name
        self.sock = sock
        self.buf = b""
        self.eof = False

    def pump(self, timeout):
        """Wait up to `timeout` s for bytes; return list of complete lines."""
        if self.eof:
            return []
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return []
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return []
        self.buf += data
        lines = []
        while b"\r\n" in self.buf:
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
        return lines

    def read_line(self, deadline):
        while time.monotonic() < deadline:
            if b"\r\n" in self.buf:
                line, self.buf = self.buf.split(b"\r\n", 1)
                return line
            if self.eof:
                return None
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                return None
            except OSError:
                data = b""
            if not data:
                self.eof = True
                return None
            self.buf += data
        return None

    def send(self, data):
        self.sock.settimeout(5.0)
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _die_with_parent():
    """Linux: have QEMU killed if the recorder dies without cleaning up."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Qemu:
    def __init__(self, binary, aux):
        self.binary = binary
        self.port = free_port()
        self.aux_port = free_port() if aux else None
        self.argv = [
            binary, "-machine", "none", "-nodefaults", "-display", "none",
            "-chardev",
            "socket,id=m,host=127.0.0.1,port=%d,server=on,wait=off,nodelay=on" % self.port,
            "-mon", "chardev=m,mode=control",
        ]
        if aux:
            self.argv += [
                "-chardev",
                "socket,id=m2,host=127.0.0.1,port=%d,server=on,wait=off,nodelay=on" % self.aux_port,
                "-mon", "chardev=m2,mode=control",
            ]
        self.errf = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.errf,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def connect(self, port, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("qemu exited early (%s): %s" % (self.proc.returncode, self.stderr()))
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=1.0)
            except OSError as e:
                last = e
                time.sleep(0.05)
        raise RuntimeError("cannot connect to qemu on port %d: %s" % (port, last))

    def stderr(self):
        self.errf.seek(0)
        return self.errf.read().decode("utf-8", "replace")

    def stop(self, grace=3.0):
        """Wait briefly for a voluntary exit (quit), then terminate/kill.
        Returns the exit code."""
        deadline = time.monotonic() + grace
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=3.0)
        return self.proc.returncode


def collect(conns, quiet, limit):
    """Collect lines from all conns until `quiet` s pass with nothing new
    (or `limit` s overall, or every connection hit EOF)."""
    out = []
    start = time.monotonic()
    last = start
    tagged = len(conns) > 1
    while True:
        now = time.monotonic()
        if now - last >= quiet or now - start >= limit:
            break
        if all(c.eof for c in conns):
            break
        wait = min(quiet - (now - last), limit - (now - start))
        got = False
        for c in conns:
            if c.eof:
                continue
            lines = c.pump(wait / len(conns) if len(conns) > 1 else wait)
            for line in lines:
                item = parse_line(line)
                if tagged:
                    item["conn"] = c.name
                out.append(item)
                got = True
        if got:
            last = time.monotonic()
    return out


def run_case(binary, case, quiet, limit):
    steps = case.get("steps", [])
    encoded = [step_bytes(s) for s in steps]
    need_aux = any(conn == "aux" for _, conn in encoded)
    q = Qemu(binary, need_aux)
    result = {"name": case["name"], "negotiate": case["negotiate"]}
    conns = {}
    try:
        main = Conn("main", q.connect(q.port))
        conns["main"] = main
        g = main.read_line(time.monotonic() + 5.0)
        result["greeting"] = parse_line(g) if g is not None else None
        neg = NEGOTIATE[case["negotiate"]]
        if neg is not None:
            main.send(neg)
            result["negotiate_reply"] = collect([main], quiet, limit)
        if need_aux:
            aux = Conn("aux", q.connect(q.aux_port))
            conns["aux"] = aux
            ag = aux.read_line(time.monotonic() + 5.0)
            aux.send(NEGOTIATE["plain"])
            result["aux_greeting"] = parse_line(ag) if ag is not None else None
            result["aux_negotiate_reply"] = collect([aux], quiet, limit)
        order = [conns["main"]] + ([conns["aux"]] if need_aux else [])
        out_steps = []
        flat = []
        for step, (data, conn) in zip(steps, encoded):
            c = conns[conn]
            err = None
            try:
                c.send(data)
            except OSError as e:
                err = str(e)
            replies = collect(order, quiet, limit)
            rec = {"sent": step, "replies": replies}
            if err:
                rec["send_error"] = err
            out_steps.append(rec)
            flat.extend(replies)
        result["steps"] = out_steps
        result["replies"] = flat
        result["eof"] = conns["main"].eof
    finally:
        for c in conns.values():
            c.close()
        # A QEMU that exits on its own within a short grace period (quit) is
        # reported as such; otherwise it is terminated by us.
        grace = 1.0 if result.get("eof") else 0.0
        rc = q.stop(grace=grace)
        result["qemu_exited_by_itself"] = bool(result.get("eof")) and rc == 0
    return result


def qemu_version(binary):
    try:
        out = subprocess.run([binary, "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=10).stdout
        return out.decode("utf-8", "replace").splitlines()[0].strip()
    except (OSError, subprocess.TimeoutExpired, IndexError) as e:
        return "unknown (%s)" % e


def main():
    # Replies may echo ids nested ~1024 deep; the json module recurses.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    # On SIGTERM/SIGINT unwind normally so every QEMU we started is stopped.
    def _raise(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, _raise)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--corpus", default=os.path.join(HERE, "corpus.json"))
    ap.add_argument("--out", default=os.path.join(HERE, "transcript.json"))
    ap.add_argument("--case", action="append", default=[],
                    help="only cases whose name starts with this (repeatable)")
    ap.add_argument("--quiet", type=float, default=0.4,
                    help="seconds of silence that end a step (default 0.4)")
    ap.add_argument("--step-timeout", type=float, default=5.0,
                    help="max seconds spent collecting one step (default 5)")
    args = ap.parse_args()

    with open(args.corpus, "r", encoding="utf-8") as f:
        corpus = json.load(f)
    cases = corpus["cases"] if isinstance(corpus, dict) else corpus
    if args.case:
        cases = [c for c in cases if any(c["name"].startswith(p) for p in args.case)]

    version = qemu_version(args.qemu)
    results = []
    greeting = None
    for case in cases:
        t0 = time.monotonic()
        try:
            r = run_case(args.qemu, case, args.quiet, args.step_timeout)
        except Exception as e:  # keep going; record the failure
            r = {"name": case["name"], "negotiate": case["negotiate"],
                 "recorder_error": "%s: %s" % (type(e).__name__, e)}
        for k in ("note", "unordered"):
            if k in case:
                r[k] = case[k]
        if greeting is None and r.get("greeting"):
            greeting = r["greeting"]
        n = len(r.get("replies", []))
        sys.stderr.write("%-45s %2d line(s) %.1fs%s\n" % (
            case["name"], n, time.monotonic() - t0,
            "  ERROR " + r["recorder_error"] if "recorder_error" in r else ""))
        results.append(r)

    transcript = {
        "qemu_version": version,
        "qemu_argv": ["qemu-system-x86_64", "-machine", "none", "-nodefaults",
                      "-display", "none", "-chardev",
                      "socket,id=m,host=127.0.0.1,port=PORT,server=on,wait=off,nodelay=on",
                      "-mon", "chardev=m,mode=control"],
        "negotiate_bytes": {k: (v.decode() if v else None) for k, v in NEGOTIATE.items()},
        "quiet_seconds": args.quiet,
        "greeting": greeting,
        "cases": results,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(transcript, f, indent=1, ensure_ascii=True)
        f.write("\n")
    bad = [r["name"] for r in results if "recorder_error" in r]
    if bad:
        sys.stderr.write("recorder errors in: %s\n" % ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
