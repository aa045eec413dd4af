"""HTTP server throughput, side by side in one run: cicada (the `cicada` CLI, on uvloop and on its
own loop) vs uvicorn (uvloop + httptools), granian (Rust, 1 worker), hypercorn and nginx returning
a fixed body (the ceiling).

Every Python server runs the same apps (bench/apps/server_raw.py, bench/apps/server_fastapi.py),
pinned to core 0 with no access log; wrk -t1 runs on core 1. All servers are up at once (idle ones
cost nothing) and runs are interleaved across subjects, so a change in machine load skews none.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import harness

TITLE = "ASGI HTTP/1.1 servers side by side (server on core 0, wrk -t1 on core 1)"
NOTES = (
    "Apps: raw ASGI (13-byte text/plain for GET; POST reads the whole body and echoes it) and "
    "FastAPI (`@app.get('/json')` returning a 3-key dict), both in bench/apps/. "
    "Subjects: `cicada APP --loop uvloop --no-access-log`; "
    "`cicada APP --loop cicada --no-access-log` (cicada's own loop, its default under "
    "`--loop auto`, whose transport calls the server's protocol in C); "
    "`uvicorn APP --loop uvloop --http httptools --no-access-log`; "
    "`granian --interface asgi --workers 1 --http 1 --loop uvloop`; "
    "`hypercorn -w 0 -k uvloop --backlog 2048` (h11; asyncio if uvloop is missing, the column "
    "name says which); "
    "nginx 1 worker, `return 200 \"Hello, World!\"`, keepalive_requests raised so wrk's "
    "connections stay open as with the others (plaintext rows only: the ceiling). "
    "wrk -t1 -c64 unless the row says -c256; POST rows send a 10 KB body "
    "(bench/apps/post_10k.lua); the 15-header GET uses bench/apps/headers_15.lua. "
    "wrk has one thread on one core: when a server's core is not busy (its CPU share below) "
    "wrk or other load set the pace (for nginx: the ceiling is then wrk's, not nginx's); the "
    "CPU µs per request do not depend on that."
)

APPS = {"raw": "server_raw:app", "fastapi": "server_fastapi:app"}
APPDIR = harness.ROOT / "bench" / "apps"

# (row label, app, path, wrk script in bench/apps, wrk connections, nginx serves it too)
SCENARIOS = [
    ("plaintext", "raw", "/", None, 64, True),
    ("plaintext -c256", "raw", "/", None, 256, True),
    ("GET, 15 headers", "raw", "/", "headers_15.lua", 64, False),
    ("POST 10 KB echo", "raw", "/echo", "post_10k.lua", 64, False),
    ("FastAPI JSON", "fastapi", "/json", None, 64, False),
]

HYPERCORN_LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
CICADA = "cicada (uvloop)"
CICADA_LOOP = "cicada (cicada loop)"
UVICORN = "uvicorn (uvloop+httptools)"
GRANIAN = "granian (1 worker, uvloop)"
HYPERCORN = f"hypercorn ({HYPERCORN_LOOP})"
NGINX = "nginx (fixed body)"
PY_SUBJECTS = [CICADA, CICADA_LOOP, UVICORN, GRANIAN, HYPERCORN]

POST_BODY = b"0123456789abcdef" * 640  # what post_10k.lua sends
FASTAPI_BODY = {"message": "Hello, World!", "id": 1, "ok": True}


def _tool(name: str) -> str | None:
    """An executable from the venv running the suite (any VENV=), else from PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def server_cmd(subject: str, app: str, port: int, keep_alive: int | None = None,
               connections: int | None = None) -> list[str]:
    """Command line serving `app` (module:attr importable from bench/apps) on 127.0.0.1:port.
    keep_alive: idle keep-alive timeout in seconds where the server has one; connections: how
    many open connections the server must hold where it caps them (None = defaults). Raises
    RuntimeError naming what is missing."""
    py = sys.executable
    if subject in (CICADA, CICADA_LOOP):
        cli = _tool("cicada")
        if not cli:
            raise RuntimeError("the cicada CLI is not installed (make build)")
        loop = "uvloop" if subject == CICADA else "cicada"
        cmd = [cli, app, "--host", "127.0.0.1", "--port", str(port), "--loop", loop,
               "--no-access-log", "--log-level", "warning"]
        return cmd + (["--timeout-keep-alive", str(keep_alive)] if keep_alive else [])
    if subject == UVICORN:
        if not importlib.util.find_spec("uvicorn"):
            raise RuntimeError("uvicorn is not installed")
        cmd = [py, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--loop",
               "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        return cmd + (["--timeout-keep-alive", str(keep_alive)] if keep_alive else [])
    if subject == GRANIAN:
        granian = _tool("granian")
        if not granian:
            raise RuntimeError("granian is not installed")
        cmd = [granian, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--http", "1", "--no-ws", "--loop", "uvloop", "--log-level",
               "warning"]
        if keep_alive:  # granian's only idle limit: its header-read timeout (max 60 s)
            cmd += ["--http1-header-read-timeout", str(min(60, keep_alive) * 1000)]
        if connections:  # it stops accepting at --backpressure (default 1024) open connections
            cmd += ["--backpressure", str(connections)]
        return cmd + [app]
    if subject == HYPERCORN:
        if not importlib.util.find_spec("hypercorn"):
            raise RuntimeError("hypercorn is not installed")
        # -w 0 serves in this process (the default -w 1 forks a worker); no access log by default.
        cmd = [py, "-m", "hypercorn", "-w", "0", "-k", HYPERCORN_LOOP, "-b", f"127.0.0.1:{port}",
               "--backlog", "2048", app]  # the backlog cicada and uvicorn default to
        return cmd + (["--keep-alive", str(keep_alive)] if keep_alive else [])
    raise ValueError(subject)


def nginx_cmd(port: int, tmp: Path) -> list[str]:
    """nginx serving the plaintext body from a config written into tmp (all its paths there)."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if not nginx:
        raise RuntimeError("nginx is not installed (make sysdeps installs nginx-light as root)")
    temps = "\n".join(f"    {kind}_temp_path {tmp / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {tmp / "nginx.pid"};
error_log {tmp / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temps}
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port} backlog=2048;
        location / {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
    }}
}}
""")
    return [nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(tmp / "nginx.conf")]


def check_response(port: int, path: str, method: str = "GET") -> None:
    """One request with http.client; raises RuntimeError unless the answer is what the app
    should send (so no subject is timed while serving errors)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = POST_BODY if method == "POST" else None
        conn.request(method, path, body=body,
                     headers={"content-type": "application/octet-stream"} if body else {})
        resp = conn.getresponse()
        got = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise RuntimeError(f"{method} {path}: {exc!r}") from None
    finally:
        conn.close()
    if method == "POST":
        ok = got == POST_BODY
    elif path == "/json":
        try:
            ok = json.loads(got) == FASTAPI_BODY
        except ValueError:
            ok = False
    else:
        ok = got == b"Hello, World!"
    if resp.status != 200 or not ok:
        raise RuntimeError(f"{method} {path}: status {resp.status}, body {got[:60]!r}")


def _start(stack: contextlib.ExitStack, cmd_fn, env: dict,
           label: str) -> tuple[int, subprocess.Popen] | None:
    """Start one server in `stack`; returns (port, process) or None after printing why not."""
    port = harness.free_port()
    try:
        proc = stack.enter_context(harness.server_process(cmd_fn(port), port, env=env,
                                                          cwd=APPDIR))
    except (RuntimeError, OSError) as exc:
        print(f"{label}: skipped ({exc})", file=sys.stderr, flush=True)
        return None
    return port, proc


def _wrk(port: int, path: str, script: str | None, connections: int, duration: float,
         pgid: int) -> dict:
    cpu0 = harness.group_cpu_seconds(pgid)
    r = harness.wrk(f"http://127.0.0.1:{port}{path}", connections=connections,
                    duration=duration, script=str(APPDIR / script) if script else None)
    r["cpu_s"] = harness.group_cpu_seconds(pgid) - cpu0
    return r


def collect(opts) -> list[harness.Result]:
    env = {"PYTHONPATH": str(APPDIR)}
    duration = max(1, int(opts.duration))
    servers: dict[tuple[str, str], tuple[int, subprocess.Popen]] = {}  # (subject, app) -> ...
    with contextlib.ExitStack() as stack:
        for subject in PY_SUBJECTS:
            for app, target in APPS.items():
                started = _start(stack, lambda p, s=subject, t=target: server_cmd(s, t, p), env,
                                 f"{subject} [{target}]")
                if started:
                    servers[(subject, app)] = started
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-nginx-")))
        started = _start(stack, lambda p: nginx_cmd(p, tmp), {}, NGINX)
        if started:
            servers[(NGINX, "raw")] = started

        # Which subject runs which row: only those answering correctly, each warmed up once.
        cells: list[tuple[str, str]] = []
        for sc, app, path, script, conns, ceiling in SCENARIOS:
            for subject in PY_SUBJECTS + ([NGINX] if ceiling else []):
                if (subject, app) not in servers:
                    continue
                port, proc = servers[(subject, app)]
                try:
                    check_response(port, path, "POST" if script == "post_10k.lua" else "GET")
                    _wrk(port, path, script, conns, 1, proc.pid)  # warm-up
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    print(f"{subject} / {sc}: skipped ({exc})", file=sys.stderr, flush=True)
                    continue
                cells.append((sc, subject))
        spec = {sc: (app, path, script, conns) for sc, app, path, script, conns, _ in SCENARIOS}
        samples: dict[tuple[str, str], list[dict]] = {cell: [] for cell in cells}
        for _ in range(opts.runs):
            for sc, subject in cells:
                app, path, script, conns = spec[sc]
                port, proc = servers[(subject, app)]
                try:
                    r = _wrk(port, path, script, conns, duration, proc.pid)
                except subprocess.CalledProcessError as exc:
                    print(f"{subject} / {sc}: wrk failed ({exc.stderr or exc})", file=sys.stderr)
                    continue
                if r["errors"]:
                    print(f"{subject} / {sc}: {r['errors']} wrk errors", file=sys.stderr)
                samples[(sc, subject)].append(r)
    results = []
    for (sc, subject), rs in samples.items():
        if not rs:
            continue
        rps = [r["rps"] for r in rs]
        results.append(harness.Result(
            sc, subject, statistics.median(rps), "req/s", rps, True,
            {"p99_ms": statistics.median(r["p99_ms"] for r in rs),
             "errors": sum(r["errors"] for r in rs),
             "cpu_pct": statistics.median(100 * r["cpu_s"] / duration for r in rs),
             "cpu_us": statistics.median(1e6 * r["cpu_s"] / max(1, r["requests"]) for r in rs)}))
    return results


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "x") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"


def summary(results: list[harness.Result]) -> str:
    """Ratios against each peer per row, the issue's targets, and anything odd (errors)."""
    by = {(r.scenario, r.subject): r for r in results}

    # "cicada" in the ratios is its default configuration: `--loop auto`, i.e. its own loop.
    def ratio(sc: str, peer: str, key: str | None = None, me: str = CICADA_LOOP) -> float | None:
        me, other = by.get((sc, me)), by.get((sc, peer))
        if not me or not other:
            return None
        a, b = (me.extra[key], other.extra[key]) if key else (me.value, other.value)
        return a / b if b else None

    lines = [
        "Ratios for cicada as it runs by default (`--loop auto`: its own loop); req/s unless named, "
        "and the CPU/req columns compare server CPU time per request, which other load on the "
        "machine disturbs least:",
        "",
        "| row | cicada ÷ uvicorn | cicada ÷ granian | cicada ÷ hypercorn | cicada ÷ nginx "
        "| cicada p99 ÷ uvicorn p99 | CPU/req: uvicorn ÷ cicada | CPU/req: nginx ÷ cicada |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [sc for sc, *_ in SCENARIOS if any(k[0] == sc for k in by)]
    for sc in rows:
        ceiling, cpu_u, cpu_n = ratio(sc, NGINX), ratio(sc, UVICORN, "cpu_us"), ratio(
            sc, NGINX, "cpu_us")
        lines.append(
            f"| {sc} | {_fmt(ratio(sc, UVICORN))} | {_fmt(ratio(sc, GRANIAN))} "
            f"| {_fmt(ratio(sc, HYPERCORN))} "
            f"| {_fmt(None if ceiling is None else 100 * ceiling, '.0f', '%')} "
            f"| {_fmt(ratio(sc, UVICORN, 'p99_ms'))} | {_fmt(1 / cpu_u if cpu_u else None)} "
            f"| {_fmt(100 / cpu_n if cpu_n else None, '.0f', '%')} |")
    # The same server on its two loops: what the issue's `--loop auto` choice rests on.
    lines += ["", "cicada on its own loop against cicada on uvloop (same server, same apps):", "",
              "| row | req/s: cicada loop ÷ uvloop | CPU/req: uvloop ÷ cicada loop |",
              "|---|---|---|"]
    for sc in rows:
        cpu = ratio(sc, CICADA, "cpu_us", me=CICADA_LOOP)
        lines.append(f"| {sc} | {_fmt(ratio(sc, CICADA, me=CICADA_LOOP))} "
                     f"| {_fmt(1 / cpu if cpu else None)} |")
    # How busy each server kept its core (well below 100%: wrk or other load on a shared
    # machine set the pace, not the server) and its CPU time per request, which other load
    # disturbs far less than req/s.
    subjects = [s for s in PY_SUBJECTS + [NGINX] if any(k[1] == s for k in by)]
    lines += ["", "Server CPU during the timed runs (medians): share of its core, and CPU µs "
              "per request (user + system, all its threads):", "",
              "| row | " + " | ".join(subjects) + " |", "|---|" + "---|" * len(subjects)]
    for sc in rows:
        lines.append(f"| {sc} | " + " | ".join(
            f"{by[(sc, s)].extra['cpu_pct']:.0f}% · {by[(sc, s)].extra['cpu_us']:.1f} µs"
            if (sc, s) in by else "–" for s in subjects) + " |")

    def target(label: str, value: float | None, ok, shown: str) -> str:
        verdict = "not measured" if value is None else ("met" if ok(value) else "missed")
        return f"- {label}: {shown if value is not None else '–'} — {verdict}"

    p99s = [(ratio(sc, UVICORN, "p99_ms"), sc) for sc, *_ in SCENARIOS
            if ratio(sc, UVICORN, "p99_ms") is not None]
    worst = max(p99s) if p99s else (None, "")
    u, g, n = ratio("plaintext", UVICORN), ratio("plaintext", GRANIAN), ratio("plaintext", NGINX)
    f = ratio("FastAPI JSON", UVICORN)
    lines += [
        "",
        "Targets from the issue (plaintext = raw ASGI, -c64):",
        target("raw ASGI ≥ 2x uvicorn", u, lambda v: v >= 2.0, _fmt(u)),
        target("raw ASGI ≥ granian", g, lambda v: v >= 1.0, _fmt(g)),
        target("raw ASGI ≥ 75% of the nginx ceiling", n, lambda v: v >= 0.75,
               _fmt(None if n is None else 100 * n, ".0f", "%")),
        target("FastAPI JSON ≥ 1.4x uvicorn", f, lambda v: v >= 1.4, _fmt(f)),
        target("p99 no worse than uvicorn's (worst row)", worst[0], lambda v: v <= 1.0,
               f"{_fmt(worst[0])} ({worst[1]})"),
    ]
    errs = [f"{r.subject} / {r.scenario}: {r.extra['errors']}" for r in results
            if r.extra.get("errors")]
    if errs:
        lines += ["", "wrk socket errors or non-2xx responses (summed over runs): "
                  + "; ".join(errs) + "."]
    load = os.getloadavg()
    lines += ["", f"Load average when the report was written: {load[0]:.2f} (1 min), "
              f"{load[1]:.2f} (5 min) on {os.cpu_count()} cores."]
    return "\n".join(lines)
