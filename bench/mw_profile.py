"""Per-request cost of middleware layers, for profiling (not a suite): runs the in-process
driver of bench/suites/middleware.py for N requests of one (kind, layers) app.

    python bench/mw_profile.py KIND LAYERS N         # plain run (use under valgrind/perf)
    python bench/mw_profile.py --callgrind KIND LAYERS   # instructions/request via callgrind
    python bench/mw_profile.py --cprofile KIND LAYERS N  # cProfile of N requests
    python bench/mw_profile.py --server-callgrind KIND LAYERS  # the same app under cicada's server

--callgrind runs valgrind twice (N=1000 and N=3000 requests) and prints the difference / 2000,
so start-up and warm-up cancel out; it does so for MW_PROFILE_LAYOUTS (default 3) memory layouts
and prints the mean (see callgrind()).
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def run(kind: str, layers: int, n: int) -> None:
    # --callgrind's layouts: small objects allocated before the app is imported shift where its
    # interned names land, hence which type-attribute cache entries collide (see callgrind())
    pad = [("%d" % j) * (1 + j % 9) for j in range(int(os.environ.get("MW_PROFILE_LAYOUT", "0")) * 37)]
    from bench.apps.mw_app import SCOPE, make_app, receive, send

    app = make_app(kind, layers)

    async def main():
        for _ in range(300):
            await app(dict(SCOPE), receive, send)
        # the app's and the interpreter's long-lived objects out of the collector's way: whether a
        # full collection of them falls inside the measured requests varied by ~0.4% per request
        gc.collect()
        gc.freeze()
        for _ in range(n):
            await app(dict(SCOPE), receive, send)

    del pad
    loop = os.environ.get("MW_PROFILE_LOOP", "uvloop")
    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def callgrind(kind: str, layers: int, keep: str | None = None, layouts: int = 3) -> float:
    """Instructions per request, the mean over `layouts` memory layouts.

    CPython's type-attribute cache is indexed by the address of the attribute's name, so where
    the interned names land decides which lookups collide and miss on every request: one build
    or environment against another moved a result by up to ~0.5% (~2k instructions per request)
    with no change to the code measured. Averaging over a few layouts evens that out."""
    values = []
    setarch = ["setarch", "-R"] if shutil.which("setarch") else []
    for layout in range(layouts):
        totals = []
        for n in (1000, 3000):
            with tempfile.TemporaryDirectory() as tmp:
                out = f"{keep}.{layout}.{n}" if keep else os.path.join(tmp, "cg.out")
                # setarch -R: no address randomisation, so a layout repeats run to run
                subprocess.run(setarch + ["valgrind", "--tool=callgrind",
                                          f"--callgrind-out-file={out}", sys.executable,
                                          __file__, kind, str(layers), str(n)],
                               check=True, capture_output=True,
                               env={**os.environ, "PYTHONHASHSEED": "0",
                                    "MW_PROFILE_LAYOUT": str(layout)})
                text = Path(out).read_text(errors="replace")
                m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(
                    r"^totals:\s+(\d+)", text, re.M)
                totals.append(int(m.group(1)))
        values.append((totals[1] - totals[0]) / 2000)
    if len(values) > 1:
        print(f"  ({kind} {layers}: per layout " + ", ".join(f"{v:,.0f}" for v in values) + ")",
              file=sys.stderr)
    return sum(values) / len(values)


def _http_get_loop(sock, n: int) -> None:
    """n keep-alive GETs on one connection, each read to the end of its Content-Length body."""
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(n):
        sock.sendall(req)
        buf = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("server closed the connection")
            buf += chunk
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", buf[:end + 2])
                if m and len(buf) >= end + 4 + int(m.group(1)):
                    break


def server_callgrind(kind: str, layers: int, n: int = 2000) -> float:
    """Instructions per request of the whole cicada server process (its loop, HTTP protocol,
    FastAPI and the layers) serving the same app, one keep-alive client: the counters are zeroed
    after a warm-up and dumped after n requests, so start-up is not counted. The kernel's work is
    not counted either; wrk's rows have it."""
    import socket
    import time

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        setarch = ["setarch", "-R"] if shutil.which("setarch") else []
        out = os.path.join(tmp, "cg.out")
        proc = subprocess.Popen(
            setarch + ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                       sys.executable, "-m", "cicada", "bench.apps.mw_app:app", "--port", str(port),
                       "--loop", "cicada", "--no-access-log", "--log-level", "warning"],
            env={**os.environ, "MW_KIND": kind, "MW_LAYERS": str(layers), "PYTHONHASHSEED": "0",
                 "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    sock = socket.create_connection(("127.0.0.1", port))
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"cicada did not start under valgrind ({kind} {layers})")
                    time.sleep(0.2)
            with sock:
                _http_get_loop(sock, 500)
                subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
                _http_get_loop(sock, n)
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        finally:
            proc.terminate()
            proc.wait(60)
        dumps = [f for f in os.listdir(tmp) if re.search(r"\.1$", f)]
        text = Path(tmp, dumps[0]).read_text(errors="replace")
        m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
        return int(m.group(1)) / n


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "--callgrind":
        keep = os.environ.get("MW_PROFILE_KEEP")
        layouts = int(os.environ.get("MW_PROFILE_LAYOUTS", "3"))
        n = callgrind(args[1], int(args[2]), keep, layouts)
        print(f"{args[1]} {args[2]}: {n:,.0f} instr/request")
    elif args[0] == "--server-callgrind":
        n = server_callgrind(args[1], int(args[2]))
        print(f"{args[1]} {args[2]} under cicada's server: {n:,.0f} instr/request")
    elif args[0] == "--cprofile":
        import cProfile
        import pstats

        cProfile.run(f"run({args[1]!r}, {int(args[2])}, {int(args[3])})", "/tmp/mw.prof")
        pstats.Stats("/tmp/mw.prof").sort_stats("tottime").print_stats(30)
    else:
        run(args[0], int(args[1]), int(args[2]))
