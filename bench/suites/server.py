"""HTTP server throughput: cicada's C HttpServer (uvloop) vs uvicorn (uvloop + httptools).

Both serve the same raw ASGI plaintext app, pinned to core 0, with wrk -c64 on core 1 and no
access log. cicada runs through bench/serve_raw.py (the C protocol alone) and, when present,
through the `cicada` CLI with --no-access-log.
"""

from __future__ import annotations

import shutil
import sys

import harness

TITLE = "ASGI HTTP/1.1 server: raw plaintext app, wrk -c64 (server on core 0, wrk on core 1)"
NOTES = ("App: raw ASGI, 13-byte text/plain body with content-type and content-length. "
         "Machine shared with other jobs while measured: ratios are indicative only.")

APP = "bench_plain_app:app"
APP_SOURCE = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                if m["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif m["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, World!"})
'''


def _subjects(port: int) -> list[tuple[str, list[str]]]:
    py = sys.executable
    subjects = [
        ("cicada (C protocol, uvloop)",
         [py, str(harness.ROOT / "bench" / "serve_raw.py"), APP, str(port), "uvloop"]),
    ]
    cli = shutil.which("cicada", path=str(harness.ROOT / ".venv" / "bin"))
    if cli:
        subjects.append(("cicada CLI", [cli, APP, "--port", str(port), "--no-access-log"]))
    subjects.append(("uvicorn (uvloop+httptools)",
                     [py, "-m", "uvicorn", APP, "--port", str(port), "--loop", "uvloop",
                      "--http", "httptools", "--no-access-log", "--log-level", "warning"]))
    return subjects


def collect(opts) -> list[harness.Result]:
    appdir = harness.ROOT / "build" / "bench-apps"
    appdir.mkdir(parents=True, exist_ok=True)
    (appdir / "bench_plain_app.py").write_text(APP_SOURCE)
    env = {"PYTHONPATH": str(appdir)}
    results = []
    port = harness.free_port()
    for name, cmd in _subjects(port):
        runs, p99s = [], []
        try:
            with harness.server_process(cmd, port, env=env, cwd=appdir):
                harness.wrk(f"http://127.0.0.1:{port}/", duration=1)  # warm-up
                for _ in range(opts.runs):
                    r = harness.wrk(f"http://127.0.0.1:{port}/", connections=64,
                                    duration=max(1, int(opts.duration)))
                    if r["errors"]:
                        print(f"{name}: {r['errors']} errors", file=sys.stderr)
                    runs.append(r["rps"])
                    p99s.append(r["p99_ms"])
        except RuntimeError as exc:
            print(f"{name}: skipped ({exc})", file=sys.stderr)
            continue
        runs_sorted = sorted(runs)
        med = runs_sorted[len(runs_sorted) // 2]
        p99 = sorted(p99s)[len(p99s) // 2]
        results.append(harness.Result("plaintext", name, med, "req/s", runs, True,
                                      {"p99_ms": p99}))
    base = next((r for r in results if r.subject.startswith("uvicorn")), None)
    if base:
        for r in results:
            if r is not base:
                print(f"{r.subject} / uvicorn = {r.value / base.value:.2f}x")
    return results
