"""cicada behind nginx (started by the test, as the current user, everything in a temp dir):
over TCP and over a unix socket; proxy headers, upstream keep-alive reuse, big bodies."""

from __future__ import annotations

import getpass
import grp
import os
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from cicada_proc import tcp_sockets

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")

CONF = """
daemon off;
master_process on;
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 100m;

    upstream cicada_tcp {{ server 127.0.0.1:{port}; keepalive 8; }}
    upstream cicada_uds {{ server unix:{sock}; keepalive 8; }}

    server {{
        listen 127.0.0.1:{nport};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto https;
        proxy_request_buffering off;
        proxy_buffering off;
        location /tcp/ {{ proxy_pass http://cicada_tcp/; }}
        location /uds/ {{ proxy_pass http://cicada_uds/; }}
    }}
}}
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def stack(serve, tmp_path):
    tcp = serve("testapps:app", "--port", "0", "--no-access-log")
    sock = str(tmp_path / "cicada.sock")
    uds = serve("testapps:app", "--uds", sock, "--forwarded-allow-ips", "*", "--no-access-log")
    port = tcp.wait_port()
    uds.wait_for("running on unix socket")
    nport = free_port()
    user = f"user {getpass.getuser()} {grp.getgrgid(os.getgid()).gr_name};" if os.getuid() == 0 else ""
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONF.format(tmp=tmp_path, port=port, sock=sock, nport=nport, user=user))
    proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{nport}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(base + "/tcp/", timeout=2)
            break
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                err = (tmp_path / "error.log").read_text() if (tmp_path / "error.log").exists() else ""
                pytest.fail(f"nginx did not start: {out}\n{err}")
            time.sleep(0.1)
    yield base, port
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("via", ["tcp", "uds"])
def test_proxy_headers_reach_app(stack, via):
    base, _ = stack
    r = httpx.get(f"{base}/{via}/scope", headers={"X-Forwarded-For": "203.0.113.50"}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["client"] and body["client"][0] == "203.0.113.50", body["headers"]
    assert body["scheme"] == "https"
    assert body["headers"]["x-forwarded-for"] == "203.0.113.50, 127.0.0.1"


def test_upstream_keepalive_reuse(stack):
    base, port = stack
    with httpx.Client(timeout=10) as c:
        for i in range(200):
            assert c.get(f"{base}/tcp/pid").status_code == 200
    # Without reuse, 200 requests leave ~200 sockets (TIME-WAIT) behind; with the keepalive
    # pool nginx keeps a handful of connections open to cicada.
    count = tcp_sockets(port)
    assert count <= 2 * 8, count


@pytest.mark.parametrize("via", ["tcp", "uds"])
def test_large_upload_and_download(stack, via):
    base, _ = stack
    size = 50 * 1024 * 1024
    payload = os.urandom(1024 * 1024) * 50
    r = httpx.post(f"{base}/{via}/upload", content=payload, timeout=60)
    assert r.status_code == 200 and r.json() == {"received": size}

    def chunks():
        block = b"y" * (256 * 1024)
        for _ in range(size // len(block)):
            yield block

    r = httpx.post(f"{base}/{via}/upload", content=chunks(), timeout=60)  # chunked upload
    assert r.json() == {"received": size}
    got = 0
    with httpx.stream("GET", f"{base}/{via}/download", params={"n": 200 * 1024 * 1024}, timeout=60) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            got += len(chunk)
    assert got == 200 * 1024 * 1024
