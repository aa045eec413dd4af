"""Middleware cost: FastAPI hello-JSON with 0, 1, 5 and 10 header-adding layers.

Four ways to write the layer: Starlette's BaseHTTPMiddleware (`@app.middleware("http")`), a
hand-written pure-ASGI class wrapping send, cicada's HTTPMiddleware, and cicada's
`accelerate(app)` over the unchanged `@app.middleware("http")` code. Measured (a) in-process:
the ASGI app called directly on one uvloop loop, CPU µs per request, and (b) under cicada's own
server on its default loop (`cicada APP --loop cicada --no-access-log`) with wrk, where the middleware's share of the
cost shows better than under a slower server. MW_BENCH_SERVER picks the server rows: `cicada`
(default), `uvicorn` (uvloop + httptools), `both`, or `0` for in-process only.
"""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import sys
import time
import urllib.request
from array import array
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TITLE = "HTTP middleware: @app.middleware('http') vs pure ASGI vs cicada"
KINDS = ["base", "pure", "cicada", "accelerate"]
LAYERS = [0, 1, 5, 10]
NOTES = (
    "Measured on `make build`'s profile-guided build (PGO=0 make build for the plain one). "
    "In-process rows are CPU µs per request (time.process_time, best of 5 slices per run, so "
    "other load on the shared machine counts less); `per layer` rows are (t(10 layers) - t(0)) / "
    "10. Server rows are cicada's own server on its default loop "
    "(`cicada APP --loop cicada --no-access-log`) "
    "pinned to core 0, wrk pinned to core 1, runs interleaved across configurations; each has "
    "req/s and the server's CPU µs per request (user + system), and the `% of none` rows give "
    "both ratios to the no-middleware server: by req/s, and by CPU per request (the capacity "
    "left, which other load on the machine disturbs least); `spread` is (max - min) / median "
    "of a cell's runs, which tells whether two cells differ by more than the noise. The uvicorn rows of earlier runs "
    "were dropped to keep the suite near 5 minutes (MW_BENCH_SERVER=uvicorn or both brings them "
    "back). "
    "Targets: one cicada layer >= 97% of no-middleware throughput, ten >= 85%, per-layer cost "
    "below the pure-ASGI layer. MW_BENCH_CALLGRIND=1 adds `instructions` rows: CPU instructions "
    "per request of the in-process driver under valgrind (PYTHONHASHSEED=0, no ASLR, long-lived "
    "objects frozen out of the collector: bench/mw_profile.py), which do not depend on the load "
    "of the machine and repeat to within a few hundred instructions, and `server instructions` "
    "rows: the same for the whole cicada server process serving the app (its loop, HTTP "
    "protocol, FastAPI and the layers; one keep-alive client, counters zeroed after a warm-up; "
    "the kernel's work is not counted). They are free of the machine's noise but count no cache "
    "misses: under the server a layer's instructions cost several times more time than "
    "in-process (the interleaved rows). "
    "`interleaved` rows (MW_BENCH_INTERLEAVED=0 skips them) are the targets' measurement under "
    "the real server: one server process serves the app without middleware on /a and the "
    "layered app on /b (bench/apps/mw_pair.py), and one wrk run (64 connections, "
    "bench/apps/alternate.lua) switches between the two paths every 1,000 requests. The server "
    "is saturated, so the time between two arrivals is what a request costs it; each block's "
    "cost per request is the slope of arrival time over request number across its middle 700 "
    "requests, and each two neighbouring blocks give one ratio (/a's cost over /b's: the "
    "throughput the layers keep). Both paths share the process, its memory layout and the "
    "machine's load of the moment, which made separate server processes differ by more than "
    "the effect measured. The cell is the median of all pairs of --runs - 1 processes (at least "
    "2) of 3 x --duration seconds (at least 10) per configuration, with their interquartile "
    "range; `µs added` is the median over the same pairs of /b's cost minus /a's. The control "
    "row serves the same app on both paths and must come out at 100%."
)


def _inprocess_us(kind: str, layers: int, iterations: int) -> float:
    import uvloop

    from bench.apps.mw_app import SCOPE, make_app, receive, send

    app = make_app(kind, layers)

    async def loop():
        for _ in range(max(200, iterations // 20)):  # warm-up (builds the middleware stack)
            await app(dict(SCOPE), receive, send)
        gc.collect()
        best = float("inf")
        chunk = max(1, iterations // 5)
        for _ in range(5):  # the best of 5 slices: other load on the machine only adds time
            t0 = time.process_time()
            for _ in range(chunk):
                await app(dict(SCOPE), receive, send)
            best = min(best, (time.process_time() - t0) / chunk * 1e6)
        return best

    return uvloop.run(loop())


def _server_cmd(server: str, port: int) -> list[str]:
    app = "bench.apps.mw_app:app"
    if server == "cicada":
        cli = shutil.which("cicada", path=str(Path(sys.executable).parent)) or shutil.which("cicada")
        if not cli:
            raise RuntimeError("the cicada CLI is not installed (make build)")
        return [cli, app, "--host", "127.0.0.1", "--port", str(port), "--loop", "cicada",
                "--no-access-log", "--log-level", "warning"]
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level",
            "warning"]


def _wrk_once(server: str, kind: str, layers: int, duration: float) -> dict:
    """One wrk run against a fresh server: req/s, p99, and the server's CPU µs per request."""
    port = harness.free_port()
    cmd = _server_cmd(server, port)
    env = {"MW_KIND": kind, "MW_LAYERS": str(layers), "PYTHONPATH": str(ROOT)}
    with harness.server_process(cmd, port, env=env) as proc:
        harness.wrk(f"http://127.0.0.1:{port}/", duration=1)  # warm-up
        cpu0 = harness.group_cpu_seconds(proc.pid)
        # wrk rejects fractional durations ("-d3.0s"), and run.py passes a float
        out = harness.wrk(f"http://127.0.0.1:{port}/", duration=max(1, round(duration)))
        cpu_s = harness.group_cpu_seconds(proc.pid) - cpu0
    return {"rps": out["rps"], "p99": out["p99_ms"],
            "cpu_us": 1e6 * cpu_s / max(1, out["requests"])}


def _spread(values: list[float]) -> str:
    """(max - min) / median of a cell's runs: how far apart its runs were on this machine."""
    med = statistics.median(values)
    if len(values) < 2 or not med:
        return "1 run"
    return f"spread {100 * (max(values) - min(values)) / med:.0f}%"


def _server_rows(server: str, runs: int, duration: float) -> list[harness.Result]:
    """wrk rows for one server. Runs are interleaved (run r of every configuration before run
    r+1 of any), so a change of load on the shared machine hits all of them alike."""
    configs = [(k, n) for n in LAYERS for k in KINDS if n or k == "pure"]
    samples: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    for _ in range(runs):
        for kind, layers in configs:
            samples[(kind, layers)].append(_wrk_once(server, kind, layers, duration))
    results, rps_of, cpu_of = [], {}, {}
    for (kind, layers), ss in samples.items():
        rps_of[(kind, layers)] = rps = statistics.median(s["rps"] for s in ss)
        cpu_of[(kind, layers)] = cpu = statistics.median(s["cpu_us"] for s in ss)
        subject = "no middleware" if layers == 0 else kind
        results.append(harness.Result(
            f"{server} {layers} layers", subject, rps, "req/s", [s["rps"] for s in ss],
            extra={"p99_ms": statistics.median(s["p99"] for s in ss),
                   "note": _spread([s["rps"] for s in ss])}))
        results.append(harness.Result(f"{server} {layers} layers: server CPU", subject, cpu,
                                      "us/req", [s["cpu_us"] for s in ss],
                                      higher_is_better=False,
                                      extra={"note": _spread([s["cpu_us"] for s in ss])}))
        print(f"  {server} {kind:10} {layers:2} layers: {rps:10.0f} req/s {cpu:7.1f} us/req",
              flush=True)
    # the targets as ratios to the same server without middleware: by req/s, and by
    # server CPU per request (the capacity left, which load on the machine disturbs least)
    for layers in (1, 10):
        for kind in KINDS:
            for label, value in (
                    ("% of none", rps_of[(kind, layers)] / rps_of[("pure", 0)] * 100),
                    ("% of none by server CPU",
                     cpu_of[("pure", 0)] / cpu_of[(kind, layers)] * 100)):
                results.append(harness.Result(f"{server} {layers} layers, {label}", kind, value,
                                              "%", [value]))
    return results


INTERLEAVED = [("pure", 0), ("pure", 1), ("cicada", 1), ("accelerate", 1), ("pure", 10),
               ("cicada", 10), ("accelerate", 10)]
BLOCK = 1000  # requests per block of one path (bench/apps/alternate.lua)
TRIM = 150  # requests left out at each end of a block: the two paths overlap there


def _block_costs(numbers, times) -> dict[int, float]:
    """ns per request of each block of BLOCK requests: the slope of arrival time over request
    number across the block's middle (least squares, so the order in which the 64 connections'
    requests arrive evens out). Blocks cut by the start or end of the run are left out."""
    points: dict[int, tuple[list[int], list[int]]] = {}
    for n, t in zip(numbers, times):
        block, i = divmod(n, BLOCK)
        if TRIM <= i < BLOCK - TRIM:
            ns, ts = points.setdefault(block, ([], []))
            ns.append(n)
            ts.append(t)
    return {block: statistics.linear_regression(ns, ts).slope
            for block, (ns, ts) in points.items() if len(ns) == BLOCK - 2 * TRIM}


def _interleaved_once(kind: str, layers: int, seconds: int, app: str = "bench.apps.mw_pair:app",
                      server: str = "cicada") -> tuple[list[float], list[float]]:
    """One server process serving both apps (bench/apps/mw_pair.py), one wrk run whose requests
    switch between /a (no middleware) and /b (the layers) every BLOCK requests. Returns, for each
    two neighbouring blocks, the cost per request on /a over that on /b in % (the throughput the
    layers keep), and the µs per request the /b block cost more than the /a block. `app` serves
    the two paths and the trace as bench/apps/mw_pair.py does; `server` is cicada or uvicorn."""
    port = harness.free_port()
    cmd = _server_cmd(server, port)
    cmd[cmd.index("bench.apps.mw_app:app")] = app
    env = {"MW_KIND": kind, "MW_LAYERS": str(layers), "PYTHONPATH": str(ROOT)}
    base = f"http://127.0.0.1:{port}"
    with harness.server_process(cmd, port, env=env):
        for path in "ab":  # warm-up
            harness.wrk(f"{base}/{path}", duration=1)
        urllib.request.urlopen(f"{base}/trace", timeout=30).read()
        harness.wrk(f"{base}/", duration=seconds, script=str(ROOT / "bench/apps/alternate.lua"),
                    script_args=[str(BLOCK)])
        raw = urllib.request.urlopen(f"{base}/trace", timeout=30).read()
    numbers, times = array("q"), array("q")
    numbers.frombytes(raw[:len(raw) // 2])
    times.frombytes(raw[len(raw) // 2:])
    cost = _block_costs(numbers, times)
    ratios, added = [], []
    for block in sorted(cost):
        if block + 1 in cost:  # even blocks are /a; pairs alternate a-b and b-a
            a, b = (cost[block], cost[block + 1]) if block % 2 == 0 else (cost[block + 1], cost[block])
            ratios.append(a / b * 100)
            added.append((b - a) / 1000)
    return ratios, added


def _interleaved_rows(runs: int, seconds: int, server: str = "cicada") -> list[harness.Result]:
    """The targets' ratios measured inside one saturated server process at a time (see
    _interleaved_once); `runs` processes per configuration, interleaved. `pure 0` is the
    control: the same app on both paths, which must come out at 100%."""
    ratios: dict[tuple[str, int], list[float]] = {c: [] for c in INTERLEAVED}
    added: dict[tuple[str, int], list[float]] = {c: [] for c in INTERLEAVED}
    for _ in range(runs):
        for config in INTERLEAVED:
            r, a = _interleaved_once(*config, seconds, server=server)
            ratios[config] += r
            added[config] += a
    results = []
    where = "interleaved" if server == "cicada" else f"{server}, interleaved"
    for (kind, layers), rs in ratios.items():
        value = statistics.median(rs)
        q = statistics.quantiles(rs, n=4)
        more = statistics.median(added[(kind, layers)])
        subject = "no middleware" if layers == 0 else kind
        scenario = "control: no middleware on both paths" if layers == 0 else f"{layers} layers"
        results.append(harness.Result(
            f"{where} {scenario}, % of none", subject, value, "%", rs,
            extra={"note": f"IQR {q[0]:.1f}-{q[2]:.1f}, {len(rs)} pairs"}))
        results.append(harness.Result(
            f"{where} {scenario}, µs added per request", subject, more, "us/req",
            added[(kind, layers)],
            higher_is_better=False))
        print(f"  {where} {kind:10} {layers:2} layers: {value:6.2f} % of none "
              f"(IQR {q[0]:.1f}-{q[2]:.1f}, {len(rs)} pairs), {more:+.2f} us/req", flush=True)
    return results


def collect(opts) -> list[harness.Result]:
    results: list[harness.Result] = []
    iters = int(os.environ.get("MW_BENCH_ITERS", "20000"))
    inproc: dict[tuple[str, int], float] = {}
    for layers in LAYERS:
        for kind in KINDS:
            if layers == 0 and kind != "pure":
                continue  # zero layers is the same app for every kind
            n = iters // 10 if kind == "base" else iters
            value, runs = harness.median_of(lambda: _inprocess_us(kind, layers, n), opts.runs)
            inproc[(kind, layers)] = value
            subject = "no middleware" if layers == 0 else kind
            results.append(harness.Result(f"in-process {layers} layers", subject, value, "us/req",
                                          runs, higher_is_better=False))
            print(f"  in-process {kind:10} {layers:2} layers: {value:8.2f} us/req", flush=True)
    for kind in KINDS:
        per = (inproc[(kind, 10)] - inproc[("pure", 0)]) / 10
        results.append(harness.Result("in-process per layer", kind, per, "us/layer", [per],
                                      higher_is_better=False))
        print(f"  per layer {kind:10}: {per:6.2f} us", flush=True)
    if os.environ.get("MW_BENCH_CALLGRIND") == "1" and shutil.which("valgrind"):
        # deterministic: CPU instructions per request (valgrind; bench/mw_profile.py)
        sys.path.insert(0, str(ROOT / "bench"))
        import mw_profile

        instr: dict[tuple[str, str, int], float] = {}
        for kind, layers in (("pure", 0), ("pure", 1), ("cicada", 1), ("accelerate", 1),
                             ("pure", 10), ("cicada", 10), ("accelerate", 10)):
            subject = "no middleware" if layers == 0 else kind
            for where, measure in (("instructions", mw_profile.callgrind),
                                   ("server instructions", mw_profile.server_callgrind)):
                n = measure(kind, layers)
                instr[(where, kind, layers)] = n
                results.append(harness.Result(f"{where} {layers} layers", subject, n,
                                              "instr/req", [n], higher_is_better=False))
                print(f"  {where} {kind:10} {layers:2} layers: {n:10,.0f}", flush=True)
        for where in ("instructions", "server instructions"):
            for layers in (1, 10):
                for kind in ("pure", "cicada", "accelerate"):
                    share = instr[(where, "pure", 0)] / instr[(where, kind, layers)] * 100
                    results.append(harness.Result(f"{where} {layers} layers, % of none", kind,
                                                  share, "%", [share]))
    choice = os.environ.get("MW_BENCH_SERVER", "cicada")
    servers = {"0": [], "1": ["cicada"], "both": ["cicada", "uvicorn"]}.get(choice, [choice])
    for server in servers:
        if server not in ("cicada", "uvicorn"):
            raise ValueError(f"MW_BENCH_SERVER must be cicada, uvicorn, both or 0, not {choice!r}")
        results += _server_rows(server, opts.runs, opts.duration)
        if os.environ.get("MW_BENCH_INTERLEAVED", "1") == "1":
            results += _interleaved_rows(max(2, opts.runs - 1), max(10, 3 * round(opts.duration)),
                                         server)
    return results
