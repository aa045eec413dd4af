"""Middleware cost: FastAPI hello-JSON with 0, 1, 5 and 10 header-adding layers.

Four ways to write the layer: Starlette's BaseHTTPMiddleware (`@app.middleware("http")`), a
hand-written pure-ASGI class wrapping send, cicada's HTTPMiddleware, and cicada's
`accelerate(app)` over the unchanged `@app.middleware("http")` code. Measured (a) in-process:
the ASGI app called directly on one uvloop loop, CPU µs per request, and (b) under uvicorn
(uvloop + httptools, no access log) with wrk.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TITLE = "HTTP middleware: @app.middleware('http') vs pure ASGI vs cicada"
KINDS = ["base", "pure", "cicada", "accelerate"]
LAYERS = [0, 1, 5, 10]
NOTES = (
    "In-process rows are CPU µs per request (time.process_time, best of 5 slices per run, so "
    "other load on the shared machine counts less); `per layer` rows are (t(10 layers) - t(0)) / 10. Server rows are "
    "uvicorn (uvloop, httptools, --no-access-log) pinned to core 0, wrk pinned to core 1. "
    "Targets: one cicada layer >= 97% of no-middleware throughput, ten >= 85%, per-layer cost "
    "below the pure-ASGI layer."
)

SCOPE = {
    "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
    "method": "GET", "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
    "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 80),
}


def _inprocess_us(kind: str, layers: int, iterations: int) -> float:
    import uvloop

    from bench.apps.mw_app import make_app

    app = make_app(kind, layers)
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive():
        return request

    async def send(message):
        pass

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


def _wrk_rps(kind: str, layers: int, duration: float) -> tuple[float, float]:
    port = harness.free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.apps.mw_app:app", "--host", "127.0.0.1",
           "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
           "--log-level", "warning"]
    env = {"MW_KIND": kind, "MW_LAYERS": str(layers), "PYTHONPATH": str(ROOT)}
    with harness.server_process(cmd, port, env=env):
        harness.wrk(f"http://127.0.0.1:{port}/", duration=1)  # warm-up
        # wrk rejects fractional durations ("-d3.0s"), and run.py passes a float
        out = harness.wrk(f"http://127.0.0.1:{port}/", duration=max(1, round(duration)))
    return out["rps"], out["p99_ms"]


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
    if os.environ.get("MW_BENCH_SERVER", "1") == "0":
        return results
    for layers in LAYERS:
        for kind in KINDS:
            if layers == 0 and kind != "pure":
                continue
            samples = [_wrk_rps(kind, layers, opts.duration) for _ in range(opts.runs)]
            rps = statistics.median(s[0] for s in samples)
            p99 = statistics.median(s[1] for s in samples)
            subject = "no middleware" if layers == 0 else kind
            results.append(harness.Result(f"uvicorn {layers} layers", subject, rps, "req/s",
                                          [s[0] for s in samples], extra={"p99_ms": p99}))
            print(f"  uvicorn {kind:10} {layers:2} layers: {rps:10.0f} req/s", flush=True)
    return results
