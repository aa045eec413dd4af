"""HTTP server throughput: cicada's C HttpServer (uvloop) vs uvicorn (uvloop + httptools) and
granian (Rust, 1 worker).

Both serve the same raw ASGI plaintext app, pinned to core 0, with wrk -c64 on core 1 and no
access log. cicada runs through bench/serve_raw.py (the C protocol alone) and, when present,
through the `cicada` CLI with --no-access-log.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
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
    granian = shutil.which("granian", path=str(harness.ROOT / ".venv" / "bin"))
    if granian:
        subjects.append(("granian (asgi, 1 worker)",
                         [granian, "--interface", "asgi", "--host", "127.0.0.1", "--port",
                          str(port), "--workers", "1", "--http", "1", "--no-ws", "--loop",
                          "uvloop", APP]))
    subjects.append(("uvicorn (uvloop+httptools)",
                     [py, "-m", "uvicorn", APP, "--port", str(port), "--loop", "uvloop",
                      "--http", "httptools", "--no-access-log", "--log-level", "warning"]))
    return subjects


HEADERS_LUA = """
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
wrk.headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
wrk.headers["Accept-Language"] = "en-US,en;q=0.5"
wrk.headers["Accept-Encoding"] = "gzip, deflate, br"
wrk.headers["Referer"] = "https://www.example.com/products/list?page=2"
wrk.headers["Cookie"] = "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark"
wrk.headers["Upgrade-Insecure-Requests"] = "1"
wrk.headers["Sec-Fetch-Dest"] = "document"
wrk.headers["Sec-Fetch-Mode"] = "navigate"
wrk.headers["Sec-Fetch-Site"] = "same-origin"
wrk.headers["Sec-Fetch-User"] = "?1"
wrk.headers["Cache-Control"] = "max-age=0"
wrk.headers["If-None-Match"] = 'W/"5e15153d-120f"'
"""

SCENARIOS = [("plaintext", None), ("GET with 15 headers", "headers.lua")]


def collect(opts) -> list[harness.Result]:
    appdir = harness.ROOT / "build" / "bench-apps"
    appdir.mkdir(parents=True, exist_ok=True)
    (appdir / "bench_plain_app.py").write_text(APP_SOURCE)
    (appdir / "headers.lua").write_text(HEADERS_LUA)
    env = {"PYTHONPATH": str(appdir)}
    # Every server runs at once (idle ones cost nothing) and runs are interleaved across
    # subjects, so a change in machine load skews none of them.
    ports = {}
    with contextlib.ExitStack() as stack:
        for name, _ in _subjects(0):
            port = harness.free_port()
            cmd = dict(_subjects(port))[name]
            try:
                stack.enter_context(harness.server_process(cmd, port, env=env, cwd=appdir))
            except RuntimeError as exc:
                print(f"{name}: skipped ({exc})", file=sys.stderr)
                continue
            ports[name] = port
            harness.wrk(f"http://127.0.0.1:{port}/", duration=1)  # warm-up
        samples = {(sc, n): ([], []) for sc, _ in SCENARIOS for n in ports}
        for _ in range(opts.runs):
            for sc, script in SCENARIOS:
                for name, port in ports.items():
                    r = harness.wrk(f"http://127.0.0.1:{port}/", connections=64,
                                    duration=max(1, int(opts.duration)),
                                    script=str(appdir / script) if script else None)
                    if r["errors"]:
                        print(f"{name}: {r['errors']} errors", file=sys.stderr)
                    samples[(sc, name)][0].append(r["rps"])
                    samples[(sc, name)][1].append(r["p99_ms"])
    results = []
    for (sc, name), (rps, p99) in samples.items():
        results.append(harness.Result(sc, name, statistics.median(rps), "req/s", rps, True,
                                      {"p99_ms": statistics.median(p99)}))
    for sc, _ in SCENARIOS:
        base = next((r for r in results if r.scenario == sc and r.subject.startswith("uvicorn")),
                    None)
        for r in results:
            if base and r.scenario == sc and r is not base:
                print(f"{sc}: {r.subject} / uvicorn = {r.value / base.value:.2f}x")
    return results
