"""--workers: shared socket, restart on death, SIGHUP roll, SIGTTIN/SIGTTOU, SIGTERM drain."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import httpx

WORKER_RX = r"Started child process \[(\d+)\]"


def get(port, path="/pid"):
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=15)


def worker_pids(p) -> list[int]:
    return [int(m) for m in re.findall(WORKER_RX, p.output)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_ready(p, n, start_count=0, timeout=60):
    """Wait until n workers logged 'Application startup complete.' (beyond start_count)."""
    deadline = time.monotonic() + timeout
    while p.count("Application startup complete.") < start_count + n:
        assert time.monotonic() < deadline, p.output
        assert p.proc.poll() is None, p.output
        time.sleep(0.1)


def test_two_workers_serve_restart_roll_and_drain(serve):
    p = serve("testapps:app", "--port", "0", "--workers", "2")
    port = p.wait_port()
    wait_ready(p, 2)
    pids = worker_pids(p)
    assert len(pids) == 2 and all(alive(x) for x in pids)

    # Both serve: freeze one, the other answers; then the other way round.
    for frozen, other in ((pids[0], pids[1]), (pids[1], pids[0])):
        os.kill(frozen, signal.SIGSTOP)
        try:
            seen = {get(port).json()["pid"] for _ in range(5)}
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert seen == {other}

    # A killed worker is replaced.
    os.kill(pids[0], signal.SIGKILL)
    p.wait_for(rf"Child process \[{pids[0]}\] died")
    wait_ready(p, 1, start_count=2)
    now = [x for x in worker_pids(p) if alive(x)]
    assert len(now) == 2 and pids[0] not in now
    assert get(port).status_code == 200

    # SIGHUP rolls every worker; the service answers throughout.
    before = set(now)
    errors: list = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                get(port, "/")
            except Exception as exc:
                errors.append(exc)
            time.sleep(0.02)

    t = threading.Thread(target=hammer)
    t.start()
    p.signal(signal.SIGHUP)
    p.wait_for("All child processes restarted.", timeout=90)
    time.sleep(0.5)
    stop.set()
    t.join()
    assert not errors, errors[:3]
    deadline = time.monotonic() + 30
    while any(alive(x) for x in before):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    after = {x for x in worker_pids(p) if alive(x)}
    assert len(after) == 2 and not (after & before)

    # SIGTERM drains: an in-flight request completes, then everything exits 0.
    result = {}

    def slow():
        result["r"] = httpx.get(f"http://127.0.0.1:{port}/slow?s=1.5", timeout=30).status_code

    ts = threading.Thread(target=slow)
    ts.start()
    time.sleep(0.5)
    p.signal(signal.SIGTERM)
    ts.join(30)
    assert result.get("r") == 200
    assert p.wait(30) == 0
    assert "Stopping parent process" in p.output
    assert not any(alive(x) for x in after)


def test_workers_recycled_after_limit_max_requests(serve):
    p = serve("testapps:app", "--port", "0", "--workers", "2", "--limit-max-requests", "2")
    port = p.wait_port()
    wait_ready(p, 2)
    first = set(worker_pids(p))
    for _ in range(6):
        assert get(port, "/").status_code == 200
    p.wait_for(r"exited \(request limit reached\); starting a replacement")
    deadline = time.monotonic() + 20
    while not set(worker_pids(p)) - first:
        assert time.monotonic() < deadline, p.output
        time.sleep(0.1)
    wait_ready(p, 1, start_count=2)
    assert get(port, "/").status_code == 200
    assert p.stop() == 0


def test_ttin_ttou(serve):
    p = serve("testapps:app", "--port", "0", "--workers", "2")
    port = p.wait_port()
    wait_ready(p, 2)
    p.signal(signal.SIGTTIN)
    p.wait_for("increasing the number of processes")
    wait_ready(p, 1, start_count=2)
    assert len([x for x in worker_pids(p) if alive(x)]) == 3
    p.signal(signal.SIGTTOU)
    p.wait_for("decreasing number of processes")
    deadline = time.monotonic() + 20
    while len([x for x in worker_pids(p) if alive(x)]) != 2:
        assert time.monotonic() < deadline, p.output
        time.sleep(0.1)
    assert get(port, "/").status_code == 200
    assert p.stop() == 0


def test_worker_startup_failure_stops_parent(serve):
    p = serve("testapps:startup_fails", "--port", "0", "--workers", "2")
    assert p.wait(60) == 3
    assert "failed to start (exit code 3), stopping the parent process" in p.output


def test_reuse_port_workers_each_bind(serve):
    p = serve("testapps:app", "--port", "0", "--workers", "2", "--reuse-port")
    port = p.wait_port()
    wait_ready(p, 2)
    seen = set()
    for _ in range(60):
        with httpx.Client() as c:  # a new connection (new source port) each time
            seen.add(c.get(f"http://127.0.0.1:{port}/pid").json()["pid"])
        if len(seen) == 2:
            break
    assert seen == set(worker_pids(p))
    assert p.stop() == 0


def test_crashing_worker_is_replaced_and_others_keep_serving(serve):
    p = serve("testapps:crash_on_request", "--port", "0", "--workers", "2")
    port = p.wait_port()
    wait_ready(p, 2)
    try:
        get(port, "/crash")
    except httpx.TransportError:
        pass  # the worker died mid-request: the client sees a closed connection
    p.wait_for(r"died \(exit code 13\); starting a replacement")
    wait_ready(p, 1, start_count=2)
    for _ in range(10):
        assert get(port, "/pid").status_code == 200
    assert p.stop() == 0


def test_workers_on_unix_socket(serve, tmp_path):
    path = str(tmp_path / "w.sock")
    p = serve("testapps:app", "--uds", path, "--workers", "2")
    p.wait_for(f"cicada running on unix socket {path}")
    wait_ready(p, 2)
    with httpx.Client(transport=httpx.HTTPTransport(uds=path)) as c:
        pids = {c.get("http://x/pid", headers={"Connection": "close"}).json()["pid"] for _ in range(20)}
    assert pids <= set(worker_pids(p))
    assert p.stop() == 0
    assert not os.path.exists(path)


def test_second_sigint_forces_workers(serve):
    p = serve("testapps:app", "--port", "0", "--workers", "2")
    port = p.wait_port()
    wait_ready(p, 2)

    def slow():
        try:
            httpx.get(f"http://127.0.0.1:{port}/slow?s=60", timeout=90)
        except httpx.TransportError:
            pass

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    p.signal(signal.SIGINT)
    p.wait_for("Waiting for connections to close")
    p.signal(signal.SIGINT)
    assert p.wait(20) == 0
    assert time.monotonic() - t0 < 15
    assert "Received SIGINT again, forcing workers to quit." in p.output


def test_worker_import_crash_stops_parent(serve, tmp_path):
    (tmp_path / "broken_syntax.py").write_text("def app(:\n")
    p = serve("broken_syntax:app", "--port", "0", "--workers", "2", "--app-dir", str(tmp_path),
              cwd=str(tmp_path))
    assert p.wait(60) == 3
    assert "SyntaxError" in p.output and "failed to start" in p.output


def test_frozen_worker_fails_its_health_check_and_is_replaced(serve):
    p = serve("testapps:app", "--port", "0", "--workers", "2", "--timeout-worker-healthcheck", "1")
    port = p.wait_port()
    wait_ready(p, 2)
    pids = worker_pids(p)
    os.kill(pids[0], signal.SIGSTOP)  # frozen: no thread of it can answer
    p.wait_for(rf"Child process \[{pids[0]}\] did not answer a health check within 1.0 s; killing it.", timeout=15)
    p.wait_for(rf"Child process \[{pids[0]}\] died", timeout=15)
    wait_ready(p, 1, start_count=2)
    now = [x for x in worker_pids(p) if alive(x)]
    assert len(now) == 2 and pids[0] not in now and pids[1] in now
    assert get(port).status_code == 200
    assert p.stop() == 0


def test_worker_frozen_while_starting_is_replaced(serve):
    """Frozen before it serves (its app's startup takes 2 s): it is killed for the health check
    it does not answer and replaced, not taken for an app that fails to start."""
    p = serve("testapps:slow_startup", "--port", "0", "--workers", "2", "--timeout-worker-healthcheck", "1")
    # a worker in its app's startup (it logs this once its health-check thread runs)
    frozen = int(p.wait_for(r"Started server process \[(\d+)\]", timeout=30).group(1))
    os.kill(frozen, signal.SIGSTOP)
    p.wait_for(rf"Child process \[{frozen}\] did not answer a health check within 1.0 s; killing it.", timeout=15)
    p.wait_for(rf"Child process \[{frozen}\] died", timeout=15)
    wait_ready(p, 2)
    assert "failed to start" not in p.output
    now = [x for x in worker_pids(p) if alive(x)]
    assert len(now) == 2 and frozen not in now
    assert p.stop() == 0


def test_busy_event_loop_is_not_killed_by_health_checks(serve):
    # Like uvicorn: the checks catch frozen processes, not a loop blocked by a slow sync call.
    p = serve("testapps:app", "--port", "0", "--workers", "2", "--timeout-worker-healthcheck", "1")
    port = p.wait_port()
    wait_ready(p, 2)
    pids = worker_pids(p)
    r = get(port, "/block?s=3.5")
    assert r.status_code == 200 and r.json()["pid"] in pids
    assert "health check" not in p.output and all(alive(x) for x in pids)
    assert p.stop() == 0
