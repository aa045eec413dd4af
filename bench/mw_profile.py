"""Per-request cost of middleware layers, for profiling (not a suite): runs the in-process
driver of bench/suites/middleware.py for N requests of one (kind, layers) app.

    python bench/mw_profile.py KIND LAYERS N         # plain run (use under valgrind/perf)
    python bench/mw_profile.py --callgrind KIND LAYERS   # instructions/request via callgrind
    python bench/mw_profile.py --cprofile KIND LAYERS N  # cProfile of N requests
    python bench/mw_profile.py --server-callgrind KIND LAYERS  # the same app under cicada's server
    python bench/mw_profile.py --server-cache KIND LAYERS  # + cache misses (see CACHE_SIM);
                                                           # MW_PROFILE_KEEP=PREFIX keeps the data,
                                                           # MW_PROFILE_VALGRIND_ARGS adds options
                                                           # (--dump-instr=yes: per instruction)
    python bench/mw_profile.py --time [ROUNDS [N]]       # CPU µs/request, interleaved runs

--time: CPU time per request of the in-process driver for none / cicada 1 / cicada 10 /
accelerate 1 / accelerate 10 (MW_PROFILE_CONFIGS="kind:layers,..." for others), all pinned to
core 0. One long-lived worker process per configuration and memory layout (MW_PROFILE_LAYOUTS,
default 3), warmed up, with long-lived objects frozen out of the collector. Each round (ROUNDS,
default 30), every worker in turn (the order rotating) runs 10 slices of N requests (default
100, ~4 ms: short enough that most slices see no other job on the core); a slice is
time.thread_time_ns() around its N requests. Printed per configuration: the median and the 25th
percentile of its slices' µs per request, each with its ratio to none, the spread
((p80 - p25) / median), cyclic-GC collections and net allocated blocks per request. MW_PROFILE_LOOP picks uvloop (default),
asyncio or cicada. MW_PROFILE_BUILDS="before=/path/bin/python,after=.venv/bin/python" runs every
configuration under each of those interpreters (other builds of cicada), all interleaved.

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


def time_worker(kind: str, layers: int) -> None:
    """--time's worker: builds the app and warms it up; then for every line `N K` on stdin runs
    K slices of N requests and writes one line: the K slices' thread-time µs per request, then
    cyclic-GC collections (all generations) and net allocated blocks per request over them."""
    pad = [("%d" % j) * (1 + j % 9) for j in range(int(os.environ.get("MW_PROFILE_LAYOUT", "0")) * 37)]
    import time

    from bench.apps.mw_app import SCOPE, make_app, receive, send

    app = make_app(kind, layers)
    del pad
    clock = time.thread_time_ns

    async def main():
        for _ in range(2000):
            await app(dict(SCOPE), receive, send)
        gc.collect()
        gc.freeze()  # as in run(): long-lived objects out of the young collections' way
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        for line in sys.stdin:
            n, k = (int(x) for x in line.split())
            times = []
            g0 = sum(g["collections"] for g in gc.get_stats())
            b0 = sys.getallocatedblocks()
            for _ in range(k):
                t0 = clock()
                for _ in range(n):
                    await app(dict(SCOPE), receive, send)
                times.append((clock() - t0) / n / 1e3)
            g = sum(g["collections"] for g in gc.get_stats()) - g0
            b = sys.getallocatedblocks() - b0
            sys.stdout.write(" ".join(f"{t:.4f}" for t in times) + f" {g / n / k:.6f} {b / n / k:.4f}\n")
            sys.stdout.flush()

    _run_loop(main)


def _run_loop(main) -> None:
    loop = os.environ.get("MW_PROFILE_LOOP", "uvloop")
    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    elif loop == "cicada":
        from cicada import loop as cloop

        cloop.run(main())
    else:
        asyncio.run(main())


TIME_CONFIGS = [("pure", 0), ("cicada", 1), ("cicada", 10), ("accelerate", 1), ("accelerate", 10)]


def time_configs(rounds: int = 30, n: int = 100, k: int = 10, layouts: int = 3,
                 configs=None, builds=None) -> dict:
    """Interleaved CPU time per request (see the module docstring). Returns, per (kind, layers)
    (per (build, kind, layers) when `builds` maps labels to Python interpreters of other builds),
    the median and the 25th percentile of its slices' µs/request, the spread, and GC
    collections and net blocks per request."""
    import statistics

    configs = configs or TIME_CONFIGS
    if builds:
        configs = [(b, kind, layers) for b in builds for kind, layers in configs]
    taskset = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    workers = []
    try:
        for layout in range(layouts):
            for config in configs:
                python = builds[config[0]] if builds else sys.executable
                kind, layers = config[-2:]
                proc = subprocess.Popen(
                    taskset + [python, __file__, "--time-worker", kind, str(layers)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    env={**os.environ, "PYTHONHASHSEED": "0", "MW_PROFILE_LAYOUT": str(layout)})
                workers.append((config, proc))
        samples = {c: {"us": [], "gc": [], "blocks": [], "workers": {}} for c in configs}
        for _, proc in workers:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a --time worker did not start")
        for r in range(rounds):
            # a different order each round, so no configuration always follows the same one
            order = workers[r % len(workers):] + workers[:r % len(workers)]
            for config, proc in order:
                proc.stdin.write(f"{n} {k}\n")
                proc.stdin.flush()
                values = [float(x) for x in proc.stdout.readline().split()]
                samples[config]["us"] += values[:-2]
                samples[config]["workers"].setdefault(proc.pid, []).extend(values[:-2])
                samples[config]["gc"].append(values[-2])
                samples[config]["blocks"].append(values[-1])
    finally:
        for _, proc in workers:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(30)
    out = {}
    for config, s in samples.items():
        us = sorted(s["us"])
        q = statistics.quantiles(us, n=20)
        med = statistics.median(us)
        per_worker = sorted(statistics.median(v) for v in s["workers"].values())
        out[config] = {"us": med, "p25": q[4], "p10": q[1], "spread": (q[15] - q[4]) / med,
                       "workers": per_worker,
                       "gc": statistics.mean(s["gc"]), "blocks": statistics.mean(s["blocks"]),
                       "slices": len(us)}
    return out


def print_times(res: dict) -> None:
    print("µs/request (median and 25th percentile of the slices; spread (p80 - p25) / median)")
    for config, r in res.items():
        build, (kind, layers) = config[:-2], config[-2:]
        base = res.get(build + ("pure", 0))
        name = " ".join(build + ("none" if layers == 0 else f"{kind} {layers}",))
        pct = f"{base['us'] / r['us'] * 100:5.1f}%" if base else ""
        pct25 = f"{base['p25'] / r['p25'] * 100:5.1f}%" if base else ""
        print(f"{name:22} median {r['us']:6.2f} {pct}   p25 {r['p25']:6.2f} {pct25}"
              f"   spread {r['spread'] * 100:4.1f}%   gc {r['gc'] * 1000:5.2f}/1000 req"
              f"   blocks {r['blocks']:+.3f}/req   ({r['slices']} slices; per process "
              + " ".join(f"{w:.2f}" for w in r["workers"]) + ")")


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


# The cache valgrind simulates for --server-cache: a 256 KiB last level stands for the part of
# the core's 1 MiB L2 left to user space once the kernel's network path has run (valgrind does
# not see the kernel), so what a request runs only once is mostly a last-level miss, as it is on
# the machine. Misses there, not instructions, are what a layer costs under the server.
CACHE_SIM = ["--cache-sim=yes", "--I1=32768,8,64", "--D1=49152,12,64", "--LL=262144,16,64"]


def server_callgrind(kind: str, layers: int, n: int = 2000, cache: bool = False):
    """Instructions per request of the whole cicada server process (its loop, HTTP protocol,
    FastAPI and the layers) serving the same app, one keep-alive client: the counters are zeroed
    after a warm-up and dumped after n requests, so start-up is not counted. The kernel's work is
    not counted either; wrk's rows have it. With `cache`, valgrind also simulates CACHE_SIM and
    the result is a dict of every event per request (Ir, I1mr, ILmr, DLmr, ...)."""
    import socket
    import time

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        setarch = ["setarch", "-R"] if shutil.which("setarch") else []
        out = os.path.join(tmp, "cg.out")
        proc = subprocess.Popen(
            setarch + ["valgrind", "--tool=callgrind", *(CACHE_SIM if cache else []),
                       *os.environ.get("MW_PROFILE_VALGRIND_ARGS", "").split(),
                       f"--callgrind-out-file={out}",
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
        if os.environ.get("MW_PROFILE_KEEP"):  # PREFIX.server: the data, for callgrind_annotate
            shutil.copy(Path(tmp, dumps[0]), os.environ["MW_PROFILE_KEEP"] + ".server")
        events = re.search(r"^events:\s+(.*)$", text, re.M).group(1).split()
        m = re.search(r"^summary:\s+(.*)$", text, re.M) or re.search(r"^totals:\s+(.*)$", text, re.M)
        per_request = {e: int(v) / n for e, v in zip(events, m.group(1).split())}
        return per_request if cache else per_request["Ir"]


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "--callgrind":
        keep = os.environ.get("MW_PROFILE_KEEP")
        layouts = int(os.environ.get("MW_PROFILE_LAYOUTS", "3"))
        n = callgrind(args[1], int(args[2]), keep, layouts)
        print(f"{args[1]} {args[2]}: {n:,.0f} instr/request")
    elif args[0] == "--time-worker":
        time_worker(args[1], int(args[2]))
    elif args[0] == "--time":
        configs = os.environ.get("MW_PROFILE_CONFIGS")
        configs = [(c.split(":")[0], int(c.split(":")[1])) for c in configs.split(",")] if configs else None
        rounds = int(args[1]) if len(args) > 1 else 30
        n = int(args[2]) if len(args) > 2 else 100
        builds = os.environ.get("MW_PROFILE_BUILDS")
        builds = dict(b.split("=", 1) for b in builds.split(",")) if builds else None
        print_times(time_configs(rounds, n, layouts=int(os.environ.get("MW_PROFILE_LAYOUTS", "3")),
                                 configs=configs, builds=builds))
    elif args[0] == "--server-callgrind":
        n = server_callgrind(args[1], int(args[2]))
        print(f"{args[1]} {args[2]} under cicada's server: {n:,.0f} instr/request")
    elif args[0] == "--server-cache":
        ev = server_callgrind(args[1], int(args[2]), n=1000, cache=True)
        last_level = ev["ILmr"] + ev["DLmr"] + ev["DLmw"]
        print(f"{args[1]} {args[2]} under cicada's server, per request: "
              + "  ".join(f"{k} {v:,.0f}" for k, v in ev.items())
              + f"  last-level misses {last_level:,.0f}")
    elif args[0] == "--cprofile":
        import cProfile
        import pstats

        cProfile.run(f"run({args[1]!r}, {int(args[2])}, {int(args[3])})", "/tmp/mw.prof")
        pstats.Stats("/tmp/mw.prof").sort_stats("tottime").print_stats(30)
    else:
        run(args[0], int(args[1]), int(args[2]))
