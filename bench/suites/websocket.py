"""WebSocket throughput: cicada's C WebSocket server vs uvicorn (--ws websockets) and granian,
all serving the same raw ASGI app (echo and broadcast), server pinned to core 0 and the raw
asyncio load client (bench/ws_load.py) to core 1. No compression (the client offers none)."""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import subprocess
import sys

import harness

TITLE = "WebSocket messages/s: echo and broadcast (server on core 0, client on core 1)"
NOTES = ("Echo: 16 connections, each keeping 8 messages in flight (binary, uncompressed). "
         "Broadcast: 16 connections, one sends (8 in flight), the app forwards every message to "
         "all 16; the figure counts deliveries. cicada runs on its own loop (its default, "
         "`--loop auto`) and on uvloop; the peers on uvloop. Machine shared with other jobs while measured: "
         "ratios are indicative only.")

APP_SOURCE = '''
members = set()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    if scope["path"] == "/broadcast":
        members.add(send)
        try:
            while True:
                m = await receive()
                if m["type"] == "websocket.disconnect":
                    return
                msg = {"type": "websocket.send", "bytes": m.get("bytes"), "text": m.get("text")}
                for s in list(members):
                    try:
                        await s(msg)
                    except Exception:
                        members.discard(s)
        finally:
            members.discard(send)
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "bytes": m.get("bytes"), "text": m.get("text")})
'''

SCENARIOS = [("echo 32 B", "echo", 32), ("echo 64 KiB", "echo", 65536),
             ("broadcast 32 B x16", "broadcast", 32)]
CONNECTIONS, WINDOW = 16, 8


def _subjects(port: int) -> list[tuple[str, list[str]]]:
    py = sys.executable
    subjects = []
    cli = shutil.which("cicada", path=str(harness.ROOT / ".venv" / "bin"))
    if cli:
        # cicada's default (`--loop auto`) is its own loop; uvloop shown beside it.
        for loop in ("cicada", "uvloop"):
            subjects.append((f"cicada ({loop} loop)" if loop == "cicada" else "cicada (uvloop)",
                             [cli, "bench_ws_app:app", "--port", str(port), "--no-access-log",
                              "--loop", loop]))
    granian = shutil.which("granian", path=str(harness.ROOT / ".venv" / "bin"))
    if granian:
        subjects.append(("granian (asgi, 1 worker)",
                         [granian, "--interface", "asgi", "--host", "127.0.0.1", "--port",
                          str(port), "--workers", "1", "--loop", "uvloop", "bench_ws_app:app"]))
    subjects.append(("uvicorn (--ws websockets)",
                     [py, "-m", "uvicorn", "bench_ws_app:app", "--port", str(port), "--loop",
                      "uvloop", "--ws", "websockets", "--no-access-log", "--log-level",
                      "warning"]))
    return subjects


def load(mode: str, port: int, size: int, seconds: float) -> float:
    cmd = harness.taskset_prefix(harness.CLIENT_CPU) + [
        sys.executable, str(harness.ROOT / "bench" / "ws_load.py"), mode, str(port), str(size),
        str(CONNECTIONS), str(WINDOW), str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    if out.returncode:
        raise RuntimeError(out.stderr[-1000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["rate"]


def collect(opts) -> list[harness.Result]:
    appdir = harness.ROOT / "build" / "bench-apps"
    appdir.mkdir(parents=True, exist_ok=True)
    (appdir / "bench_ws_app.py").write_text(APP_SOURCE)
    env = {"PYTHONPATH": str(appdir)}
    ports = {}
    samples: dict[tuple[str, str], list[float]] = {}
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
        # Interleaved runs: a change in machine load skews no subject in particular.
        for _ in range(opts.runs):
            for sc, mode, size in SCENARIOS:
                for name, port in ports.items():
                    try:
                        rate = load(mode, port, size, max(1.0, opts.duration))
                    except Exception as exc:  # noqa: BLE001 - report and go on
                        print(f"{sc} / {name}: failed ({exc})", file=sys.stderr)
                        continue
                    samples.setdefault((sc, name), []).append(rate)
    results = [harness.Result(sc, name, statistics.median(v), "msg/s", v, True)
               for (sc, name), v in samples.items()]
    for sc, _, _ in SCENARIOS:
        base = next((r for r in results if r.scenario == sc and r.subject.startswith("uvicorn")),
                    None)
        for r in results:
            if base and r.scenario == sc and r is not base:
                print(f"{sc}: {r.subject} / uvicorn = {r.value / base.value:.2f}x")
    return results
