"""End-to-end: `python -m cicada` in a subprocess, driven over loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import httpx
import pytest

from cicada_proc import CicadaProcess, base_env, http_args, tcp_sockets


def get(port, path="/", **kw):
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10, **kw)


def test_port_zero_prints_chosen_port_and_serves(serve):
    p = serve("testapps:app", "--port", "0")
    port = p.wait_port()
    assert port != 0
    r = get(port)
    assert r.status_code == 200 and r.text == "Hello, world!"
    assert p.stop() == 0
    out = p.output
    order = ["Started server process [", "Waiting for application startup.", "Application startup complete.",
             f"cicada running on http://127.0.0.1:{port} (Press CTRL+C to quit)", "Shutting down",
             "Waiting for application shutdown.", "Application shutdown complete.", "Finished server process ["]
    positions = [out.index(s) for s in order]
    assert positions == sorted(positions), out


def test_lifespan_state_reaches_requests_and_shutdown_runs(serve, tmp_path):
    marker = tmp_path / "down"
    p = serve("testapps:lifespan_state_app", "--port", "0", env={"SHUTDOWN_MARKER": str(marker)})
    port = p.wait_port()
    assert get(port).json() == {"db": "connected"}
    assert p.stop(signal.SIGINT) == 0
    assert marker.read_text() == "done"
    assert "LIFESPAN SHUTDOWN" in p.output


@pytest.mark.parametrize("app, lifespan, needle", [
    ("testapps:startup_fails", "auto", "database unreachable"),
    ("testapps:startup_raises", "on", "boom in startup"),
])
def test_lifespan_startup_failure_exits_3(serve, app, lifespan, needle):
    p = serve(app, "--port", "0", "--lifespan", lifespan)
    assert p.wait(20) == 3
    assert needle in p.output and "Application startup failed. Exiting." in p.output
    assert "running on" not in p.output


def test_lifespan_auto_ignores_app_without_lifespan(serve):
    p = serve("testapps:no_lifespan", "--port", "0")
    port = p.wait_port()
    assert "ASGI 'lifespan' protocol appears unsupported." in p.output
    assert get(port).text == "ok"
    assert p.stop() == 0


def test_lifespan_off(serve):
    p = serve("testapps:startup_fails", "--port", "0", "--lifespan", "off")
    port = p.wait_port()
    assert "Waiting for application startup." not in p.output
    p.stop()
    del port


def test_asgi2_and_factory(serve):
    p = serve("testapps:asgi2_app", "--port", "0")
    assert get(p.wait_port()).text == "asgi2"
    q = serve("testapps:create_app", "--factory", "--port", "0")
    assert get(q.wait_port()).text == "Hello, world!"


def test_uds(serve, tmp_path):
    path = str(tmp_path / "app.sock")
    p = serve("testapps:app", "--uds", path)
    p.wait_for(f"cicada running on unix socket {path}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    with httpx.Client(transport=httpx.HTTPTransport(uds=path)) as c:
        r = c.get("http://localhost/scope")
    assert r.status_code == 200 and r.json()["path"] == "/scope"
    assert p.stop() == 0
    assert not os.path.exists(path)


def test_fd(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cicada", "testapps:app", "--fd", str(fd), *http_args()],
        pass_fds=[fd], env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    sock.close()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = get(port)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert r.text == "Hello, world!"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "cicada running on socket ('127.0.0.1'," in out


def test_root_path(serve):
    p = serve("testapps:app", "--port", "0", "--root-path", "/api/v1")
    body = get(p.wait_port(), "/scope").json()
    assert body["root_path"] == "/api/v1"


def test_proxy_headers_trusted_by_default_from_loopback(serve):
    p = serve("testapps:app", "--port", "0")
    port = p.wait_port()
    body = get(port, "/scope", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}).json()
    assert body["client"][0] == "203.0.113.7" and body["scheme"] == "https"


def test_proxy_headers_untrusted_peer_ignored(serve):
    p = serve("testapps:app", "--port", "0", "--forwarded-allow-ips", "10.0.0.1")
    body = get(p.wait_port(), "/scope", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}).json()
    assert body["client"][0] == "127.0.0.1" and body["scheme"] == "http"


def test_proxy_headers_cidr_and_env(serve):
    p = serve("testapps:app", "--port", "0", env={"FORWARDED_ALLOW_IPS": "127.0.0.0/8"})
    body = get(p.wait_port(), "/scope", headers={"X-Forwarded-For": "198.51.100.1, 127.0.0.5"}).json()
    assert body["client"][0] == "198.51.100.1"


def test_no_proxy_headers(serve):
    p = serve("testapps:app", "--port", "0", "--no-proxy-headers")
    body = get(p.wait_port(), "/scope", headers={"X-Forwarded-For": "203.0.113.7"}).json()
    assert body["client"][0] == "127.0.0.1"


def test_headers_server_and_date(serve):
    p = serve("testapps:app", "--port", "0", "--header", "X-Frame-Options: DENY", "--header", "X-Team:cicada")
    r = get(p.wait_port())
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-team"] == "cicada"
    assert r.headers["server"] == "cicada" and "date" in r.headers
    q = serve("testapps:app", "--port", "0", "--no-server-header", "--no-date-header")
    r = get(q.wait_port())
    assert "server" not in r.headers and "date" not in r.headers
    s = serve("testapps:app", "--port", "0", "--header", "Server: edge")
    r = get(s.wait_port())
    assert r.headers.get_list("server") == ["edge"]


def test_access_log_on_and_off(serve):
    p = serve("testapps:app", "--port", "0")
    get(p.wait_port(), "/hello?x=1")
    p.wait_for(r'127\.0\.0\.1:\d+ - "GET /hello\?x=1 HTTP/1\.1" 200 OK')
    q = serve("testapps:app", "--port", "0", "--no-access-log")
    get(q.wait_port(), "/hello")
    q.stop()
    assert '"GET /hello' not in q.output


LOG_DICT = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "CUSTOM %(name)s %(levelname)s %(message)s"}},
    "handlers": {"file": {"class": "logging.FileHandler", "filename": "FILE", "formatter": "plain"}},
    "loggers": {
        "cicada.error": {"handlers": ["file"], "level": "INFO", "propagate": False},
        "cicada.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
    },
}

INI = """[loggers]
keys=root,error,access
[handlers]
keys=file
[formatters]
keys=plain
[logger_root]
level=WARNING
handlers=
[logger_error]
level=INFO
handlers=file
qualname=cicada.error
propagate=0
[logger_access]
level=INFO
handlers=file
qualname=cicada.access
propagate=0
[handler_file]
class=FileHandler
formatter=plain
args=('FILE',)
[formatter_plain]
format=CUSTOM %(name)s %(levelname)s %(message)s
"""


@pytest.mark.parametrize("kind", ["json", "yaml", "ini"])
def test_log_config_files(serve, tmp_path, kind):
    import yaml

    logfile = tmp_path / "server.log"
    cfg = tmp_path / f"log.{kind}"
    if kind == "ini":
        cfg.write_text(INI.replace("FILE", str(logfile)))
    else:
        d = json.loads(json.dumps(LOG_DICT).replace('"FILE"', json.dumps(str(logfile))))
        cfg.write_text(json.dumps(d) if kind == "json" else yaml.safe_dump(d))
    p = serve("testapps:app", "--port", "0", "--log-config", str(cfg))
    deadline = time.monotonic() + 20
    port = None
    while port is None and time.monotonic() < deadline:
        text = logfile.read_text() if logfile.exists() else ""
        for line in text.splitlines():
            if "running on http://127.0.0.1:" in line:
                port = int(line.split("127.0.0.1:")[1].split()[0])
        time.sleep(0.1)
    assert port, p.output
    get(port, "/logged")
    assert p.stop() == 0
    text = logfile.read_text()
    assert "CUSTOM cicada.error INFO Application startup complete." in text
    assert "CUSTOM cicada.access INFO" in text and "/logged" in text


def _slow_requests(port, n, seconds):
    results: list = [None] * n

    def one(i):
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/slow?s={seconds}", timeout=30)
            results[i] = r.status_code
        except Exception as exc:  # recorded, asserted below
            results[i] = repr(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def _wait_active(port, expected_connections, timeout=10):
    # Wait until every slow request has been accepted: both ends of each connection are
    # ESTABLISHED (client and server side both show up in /proc/net/tcp on loopback).
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tcp_sockets(port, ("01",)) >= 2 * expected_connections:
            return
        time.sleep(0.05)


def test_graceful_shutdown_completes_in_flight_requests(serve):
    p = serve("testapps:app", "--port", "0")
    port = p.wait_port()
    threads, results = _slow_requests(port, 8, 1.5)
    _wait_active(port, 8)
    time.sleep(0.2)
    p.signal(signal.SIGTERM)
    p.wait_for("Shutting down")
    for t in threads:
        t.join(30)
    assert results == [200] * 8, results
    assert p.wait(20) == 0
    assert "Waiting for connections to close." in p.output or "Waiting for background tasks" in p.output
    with pytest.raises(httpx.TransportError):
        get(port)


def test_graceful_timeout_then_force(serve):
    p = serve("testapps:app", "--port", "0", "--timeout-graceful-shutdown", "1")
    port = p.wait_port()
    threads, results = _slow_requests(port, 2, 30)
    _wait_active(port, 2)
    time.sleep(0.2)
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    assert p.wait(15) == 0
    assert time.monotonic() - t0 < 8
    assert "timeout graceful shutdown exceeded" in p.output
    for t in threads:
        t.join(10)
    assert all(r != 200 for r in results)


def test_second_ctrl_c_forces(serve):
    p = serve("testapps:app", "--port", "0")
    port = p.wait_port()
    threads, results = _slow_requests(port, 1, 30)
    _wait_active(port, 1)
    time.sleep(0.2)
    p.signal(signal.SIGINT)
    p.wait_for("Waiting for connections to close")
    p.signal(signal.SIGINT)
    assert p.wait(10) == 0
    for t in threads:
        t.join(10)


def test_limit_max_requests(serve):
    p = serve("testapps:app", "--port", "0", "--limit-max-requests", "3")
    port = p.wait_port()
    for _ in range(3):
        assert get(port).status_code == 200
    assert p.wait(10) == 0
    assert "Maximum request limit of 3 exceeded. Terminating process." in p.output


def test_python_api_run(tmp_path):
    code = (
        "import cicada, sys\n"
        "assert cicada.Config and cicada.Server\n"
        f"cicada.run('testapps:app', port=0, lifespan='on', http={(http_args() or [None, 'auto'])[1]!r})\n"
    )
    p = CicadaProcess(["-c", code], module="", add_http=False) if False else None
    proc = subprocess.Popen([sys.executable, "-c", code], env=base_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "running on http://127.0.0.1:" in line:
                port = int(line.split("127.0.0.1:")[1].split()[0])
                break
        assert port, "".join(lines)
        assert get(port).text == "Hello, world!"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    del p


def test_python_api_with_app_object_in_thread_free_server():
    """Config/Server driven directly: serve() in our own loop, stop via should_exit."""
    import asyncio

    import cicada
    import testapps

    http = http_args()[1] if http_args() else "auto"
    cfg = cicada.Config(testapps.app, port=0, http=http, log_config=None)
    server = cicada.Server(cfg)

    async def main():
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient() as c:
            r = await c.get(f"http://127.0.0.1:{port}/")
        server.should_exit = True
        await task
        return r

    r = asyncio.run(main())
    assert r.text == "Hello, world!"


def test_websocket_upgrade_refused_with_ws_none(serve):
    p = serve("testapps:app", "--port", "0", "--ws", "none")
    port = p.wait_port()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    s.settimeout(5)
    data = s.recv(4096)
    s.close()
    assert data.startswith(b"HTTP/1.1 4"), data
    assert b"101" not in data.split(b"\r\n")[0]


def test_trace_log_level_logs_asgi_messages(serve):
    p = serve("testapps:app", "--port", "0", "--log-level", "trace")
    get(p.wait_port(), "/")
    p.wait_for(r"TRACE:\s+127\.0\.0\.1:\d+ - ASGI \[\d+\] Send \{'type': 'http.response.start'")
    p.wait_for(r"ASGI \[\d+\] Completed")


def test_use_colors(serve):
    p = serve("testapps:app", "--port", "0", "--use-colors")
    p.wait_for(r"cicada running on \x1b\[1mhttp://127\.0\.0\.1:\d+\x1b\[0m")
    assert "\x1b[32mINFO\x1b[0m:" in p.output  # green level name
    q = serve("testapps:app", "--port", "0", "--no-use-colors")
    q.wait_port()
    assert "\x1b[" not in q.output


def test_console_script(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "cicada")
    r = subprocess.run([script, "--version"], capture_output=True, text=True, env=base_env())
    assert r.returncode == 0 and r.stdout.startswith("cicada ")


def test_ipv6_host(serve):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    p = serve("testapps:app", "--host", "::1", "--port", "0")
    m = p.wait_for(r"running on http://\[::1\]:(\d+)")
    r = httpx.get(f"http://[::1]:{m.group(1)}/", timeout=10)
    assert r.text == "Hello, world!"


def test_custom_http_implementation_import_string(serve):
    """--http module:Class plugs in another HttpServer-compatible protocol factory (here the
    uvicorn-backed test stand-in)."""
    p = serve("testapps:app", "--port", "0", "--http", "uvicorn_backend:HttpServer", add_http=False)
    r = get(p.wait_port(), "/scope")
    assert r.status_code == 200 and r.headers["server"] == "cicada"
    bad = serve("testapps:app", "--port", "0", "--http", "uvicorn_backend:Nope", add_http=False)
    assert bad.wait(20) == 3
    assert 'Attribute "Nope" not found in module "uvicorn_backend"' in bad.output


def test_idle_keepalive_connections_do_not_delay_shutdown(serve):
    p = serve("testapps:app", "--port", "0", "--timeout-keep-alive", "60")
    port = p.wait_port()
    clients = [httpx.Client() for _ in range(5)]
    for c in clients:
        assert c.get(f"http://127.0.0.1:{port}/").status_code == 200  # connection stays open
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    assert p.wait(20) == 0
    assert time.monotonic() - t0 < 5
    for c in clients:
        c.close()


def test_env_file_and_cicada_env_vars(serve, tmp_path):
    env = tmp_path / "app.env"
    env.write_text("GREETING=hello from dotenv\nCICADA_ROOT_PATH=/mounted\n")
    p = serve("testapps:env_app", "--port", "0", "--env-file", str(env))
    port = p.wait_port()
    assert get(port, "/").json() == {"greeting": "hello from dotenv"}
    q = serve("testapps:app", env={"CICADA_PORT": "0", "CICADA_ROOT_PATH": "/x", "CICADA_NO_SUCH": "1"})
    assert get(q.wait_port(), "/scope").json()["root_path"] == "/x"
    r = serve("testapps:app", "--port", "0", "--env-file", str(env))
    assert get(r.wait_port(), "/scope").json()["root_path"] == "/mounted"


def test_limit_concurrency_503(serve):
    p = serve("testapps:app", "--port", "0", "--limit-concurrency", "1")
    port = p.wait_port()
    threads, results = _slow_requests(port, 1, 1.5)
    _wait_active(port, 1)
    time.sleep(0.2)
    r = get(port, "/")
    assert r.status_code == 503
    for t in threads:
        t.join(10)
    assert results == [200]
    p.wait_for("Exceeded concurrency limit.")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "cicada"])
def test_loop_choices_serve(serve, loop):
    import importlib.util

    if loop == "cicada":
        try:
            import cicada.loop  # noqa: F401
        except ImportError:
            pytest.skip("cicada's own loop is not in this build")
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop not installed")
    p = serve("testapps:app", "--port", "0", "--loop", loop)
    assert get(p.wait_port()).text == "Hello, world!"
    assert p.stop() == 0


def test_python_api_workers_need_import_string():
    code = "import cicada, testapps\ncicada.run(testapps.app, workers=2, port=0)\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=base_env(), timeout=30)
    assert r.returncode == 3
    assert "You must pass the application as an import string to enable 'reload' or 'workers'." in r.stderr
