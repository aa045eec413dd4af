"""gunicorn with cicada's worker class; --reload restarting on a file change."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import httpx

from cicada_proc import CicadaProcess, have_c_server


def test_gunicorn_cicada_worker_serves(serve):
    worker = "cicada.workers.CicadaWorker" if have_c_server() else "gunicorn_workers.TestWorker"
    p = serve("-b", "127.0.0.1:0", "-w", "2", "-k", worker, "--graceful-timeout", "10",
              "--max-requests", "1000", "--keep-alive", "3", "testapps:app", module="gunicorn")
    m = p.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)", timeout=30)
    port = int(m.group(1))
    p.wait_for("Application startup complete.", timeout=30)
    deadline = time.monotonic() + 30
    while p.count("Application startup complete.") < 2:
        assert time.monotonic() < deadline, p.output
        time.sleep(0.1)
    r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert r.status_code == 200 and r.text == "Hello, world!"
    body = httpx.get(f"http://127.0.0.1:{port}/scope", headers={"X-Forwarded-For": "192.0.2.1"}).json()
    assert body["client"][0] == "192.0.2.1"  # gunicorn's forwarded_allow_ips default trusts loopback

    result = {}

    def slow():
        result["r"] = httpx.get(f"http://127.0.0.1:{port}/slow?s=1.5", timeout=30).status_code

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    p.signal(signal.SIGTERM)  # gunicorn's graceful stop
    t.join(30)
    assert result.get("r") == 200
    assert p.wait(30) == 0
    assert "Shutting down" in p.output


APP_V1 = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"VERSION"})
'''


def test_reload_restarts_on_change(serve, tmp_path):
    (tmp_path / "reloadme.py").write_text(APP_V1.replace("VERSION", "v1"))
    p = serve("reloadme:app", "--port", "0", "--reload", "--reload-dir", str(tmp_path),
              "--app-dir", str(tmp_path), "--reload-delay", "0.1", cwd=str(tmp_path))
    port = p.wait_port()
    p.wait_for("Started reloader process")
    p.wait_for("Application startup complete.")
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "v1"
    time.sleep(0.5)  # let the watcher settle
    (tmp_path / "notes.txt").write_text("not python: ignored")
    (tmp_path / "reloadme.py").write_text(APP_V1.replace("VERSION", "v2"))
    p.wait_for(r"WatchFiles detected changes in .*reloadme\.py.*Reloading", timeout=20)
    assert "notes.txt" not in p.output
    deadline = time.monotonic() + 20
    text = None
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
            if text == "v2":
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    assert text == "v2", p.output
    assert p.stop(signal.SIGINT) == 0
    assert "Stopping reloader process" in p.output
    assert len(re.findall(r"Started server process", p.output)) == 2


def one_worker(serve):
    """gunicorn with one cicada worker and --timeout 2, started: (process, port)."""
    worker = "cicada.workers.CicadaWorker" if have_c_server() else "gunicorn_workers.TestWorker"
    p = serve("-b", "127.0.0.1:0", "-w", "1", "-k", worker, "--timeout", "2", "testapps:app",
              module="gunicorn")
    port = int(p.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)", timeout=30).group(1))
    p.wait_for("Application startup complete.", timeout=30)
    return p, port


def test_gunicorn_heartbeat_keeps_idle_worker_alive(serve):
    """gunicorn kills workers that don't refresh their heartbeat within --timeout; an idle
    cicada worker must keep refreshing it from its tick."""
    p, port = one_worker(serve)
    pid1 = httpx.get(f"http://127.0.0.1:{port}/pid", timeout=10).json()["pid"]
    time.sleep(6)  # three gunicorn timeouts with no traffic
    pid2 = httpx.get(f"http://127.0.0.1:{port}/pid", timeout=10).json()["pid"]
    assert pid1 == pid2
    assert "WORKER TIMEOUT" not in p.output
    assert p.stop() == 0


def test_gunicorn_worker_exits_when_its_master_is_killed(serve):
    """The master killed outright (SIGKILL: no signal reaches the worker): the worker notices its
    parent changed and exits instead of serving the socket forever as an orphan."""
    p, port = one_worker(serve)
    pid = httpx.get(f"http://127.0.0.1:{port}/pid", timeout=10).json()["pid"]
    p.kill()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"worker {pid} still alive 15 s after its master was killed")


def _wait_text(port, expected, timeout=20):
    deadline = time.monotonic() + timeout
    text = None
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
            if text == expected:
                return text
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return text


def test_reload_survives_a_broken_edit(serve, tmp_path):
    mod = tmp_path / "editme.py"
    mod.write_text(APP_V1.replace("VERSION", "v1"))
    p = serve("editme:app", "--port", "0", "--reload", "--reload-dir", str(tmp_path),
              "--app-dir", str(tmp_path), "--reload-delay", "0.1", cwd=str(tmp_path))
    port = p.wait_port()
    assert _wait_text(port, "v1") == "v1"
    time.sleep(0.5)
    mod.write_text("def app(:\n")  # syntax error: the server process fails to start
    p.wait_for("SyntaxError", timeout=20)
    assert p.proc.poll() is None  # the reloader keeps watching
    mod.write_text(APP_V1.replace("VERSION", "v3"))
    assert _wait_text(port, "v3") == "v3", p.output
    assert p.stop(signal.SIGTERM) == 0
