"""TLS (--ssl-*): https and wss served by the CLI on every loop, client certificates, and clear
errors for bad certificate options. Certificates come from trustme (a throwaway CA)."""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpx
import pytest
import trustme
import websockets

from cicada_proc import CicadaProcess, run_cli

LOOPS = ["asyncio", "uvloop", "cicada"]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def certs(ca, tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "both.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return d


@pytest.fixture
def serve():
    started: list[CicadaProcess] = []

    def start(*args: str) -> CicadaProcess:
        p = CicadaProcess(["testapps:tls_app", "--port", "0", *args])
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def client_ctx(ca, client_cert=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if client_cert is not None:
        client_cert.configure_cert(ctx)
    return ctx


@pytest.mark.parametrize("loop", LOOPS)
def test_https_keep_alive_and_upload(serve, certs, ca, loop):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"), "--loop", loop)
    port = p.wait_port()
    assert f"running on https://127.0.0.1:{port}" in p.output
    with httpx.Client(verify=client_ctx(ca), base_url=f"https://localhost:{port}") as client:
        for i in range(3):  # one TLS connection, reused
            r = client.get(f"/n{i}")
            assert r.status_code == 200 and r.json() == {"scheme": "https", "received": 0, "path": f"/n{i}"}
        big = b"x" * (3 * 1024 * 1024 + 17)
        assert client.post("/upload", content=big).json()["received"] == len(big)
    assert p.stop() == 0


def test_https_large_download(serve, certs, ca):
    p = serve("--ssl-certfile", str(certs / "both.pem"))  # key inside the certificate file
    port = p.wait_port()
    with httpx.Client(verify=client_ctx(ca)) as client:
        r = client.get(f"https://localhost:{port}/download?n=5000000&chunk=65536")
        assert r.status_code == 200 and len(r.content) == 5000000
    assert p.stop() == 0


@pytest.mark.parametrize("loop", ["uvloop", "cicada"])
def test_wss(serve, certs, ca, loop):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"), "--loop", loop)
    port = p.wait_port()

    async def talk():
        async with websockets.connect(f"wss://localhost:{port}/ws", ssl=client_ctx(ca)) as ws:
            scheme = await ws.recv()
            await ws.send(b"\x00" * 100_000)
            echoed = await ws.recv()
            return scheme, echoed

    scheme, echoed = asyncio.run(talk())
    assert scheme == "wss" and echoed == b"\x00" * 100_000
    assert p.stop() == 0


def test_client_certificate_required(serve, certs, ca):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"),
              "--ssl-cert-reqs", "2", "--ssl-ca-certs", str(certs / "ca.pem"))
    port = p.wait_port()
    good = ca.issue_cert("client@example.com")
    with httpx.Client(verify=client_ctx(ca, good)) as client:
        assert client.get(f"https://localhost:{port}/").json()["scheme"] == "https"
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        with httpx.Client(verify=client_ctx(ca)) as client:
            client.get(f"https://localhost:{port}/")
    # The server keeps serving after the refused handshake.
    with httpx.Client(verify=client_ctx(ca, good)) as client:
        assert client.get(f"https://localhost:{port}/").status_code == 200
    assert p.stop() == 0


def test_plain_http_and_garbage_on_tls_port_do_not_hurt(serve, certs, ca):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"))
    port = p.wait_port()
    for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05hello", b""):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    with httpx.Client(verify=client_ctx(ca)) as client:
        assert client.get(f"https://localhost:{port}/").status_code == 200
    assert p.stop() == 0


def test_workers_serve_tls(serve, certs, ca):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"), "--workers", "2")
    port = p.wait_port()
    p.wait_for("Application startup complete", timeout=30)
    with httpx.Client(verify=client_ctx(ca)) as client:
        assert client.get(f"https://localhost:{port}/").json()["scheme"] == "https"
    assert p.stop() == 0


@pytest.mark.parametrize("extra, needle", [
    (["--ssl-certfile", "/nonexistent/cert.pem"], "Invalid value for '--ssl-certfile': '/nonexistent/cert.pem': no such file"),
    (["--ssl-keyfile", "KEY"], "Invalid value for '--ssl-certfile': a certificate file is needed"),
    (["--ssl-certfile", "CERT", "--ssl-keyfile", "/nonexistent/key.pem"], "Invalid value for '--ssl-keyfile': '/nonexistent/key.pem': no such file"),
    (["--ssl-certfile", "CA"], "Invalid value for '--ssl-certfile': cannot load the certificate chain"),
    (["--ssl-certfile", "CERT", "--ssl-keyfile", "KEY", "--ssl-version", "99"], "Invalid value for '--ssl-version': 99 is not one of"),
    (["--ssl-certfile", "CERT", "--ssl-keyfile", "KEY", "--ssl-cert-reqs", "7"], "Invalid value for '--ssl-cert-reqs': 7 is not one of"),
    (["--ssl-certfile", "CERT", "--ssl-keyfile", "KEY", "--ssl-ciphers", "NO-SUCH-CIPHER"], "Invalid value for '--ssl-ciphers'"),
    (["--ssl-certfile", "CERT", "--ssl-keyfile", "KEY", "--ssl-ca-certs", "/nonexistent/ca.pem"], "Invalid value for '--ssl-ca-certs'"),
])
def test_bad_tls_options_exit_2_naming_the_option(certs, extra, needle):
    names = {"CERT": "cert.pem", "KEY": "key.pem", "CA": "ca.pem"}
    args = [str(certs / names[a]) if a in names else a for a in extra]
    r = run_cli(["testapps:tls_app", "--port", "0", *args])
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_encrypted_key_password(certs, ca, tmp_path, serve):
    from cryptography.hazmat.primitives import serialization

    cert = ca.issue_cert("localhost")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    enc = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"s3cret"))
    (tmp_path / "enc.pem").write_bytes(enc)
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    base = ["testapps:tls_app", "--port", "0", "--ssl-certfile", str(tmp_path / "c.pem"),
            "--ssl-keyfile", str(tmp_path / "enc.pem")]
    r = run_cli([*base, "--ssl-keyfile-password", "wrong"])
    assert r.returncode == 2 and "Invalid value for '--ssl-keyfile-password'" in r.stderr, r.stderr
    p = serve("--ssl-certfile", str(tmp_path / "c.pem"), "--ssl-keyfile", str(tmp_path / "enc.pem"),
              "--ssl-keyfile-password", "s3cret")
    port = p.wait_port()
    with httpx.Client(verify=client_ctx(ca)) as client:
        assert client.get(f"https://localhost:{port}/").status_code == 200
    assert p.stop() == 0


def test_encrypted_key_without_password_is_refused_not_prompted(certs, ca, tmp_path):
    from cryptography.hazmat.primitives import serialization

    cert = ca.issue_cert("localhost")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    (tmp_path / "enc.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    r = run_cli(["testapps:tls_app", "--port", "0", "--ssl-certfile", str(tmp_path / "c.pem"),
                 "--ssl-keyfile", str(tmp_path / "enc.pem")], timeout=20)
    assert r.returncode == 2 and "Invalid value for '--ssl-keyfile-password'" in r.stderr, r.stderr
    assert "is encrypted" in r.stderr


def test_gunicorn_cicada_worker_with_tls(certs, ca):
    p = CicadaProcess(["-b", "127.0.0.1:0", "-w", "1", "-k", "cicada.workers.CicadaWorker",
                       "--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / "key.pem"),
                       "testapps:tls_app"], module="gunicorn")
    try:
        port = int(p.wait_for(r"Listening at: https?://127\.0\.0\.1:(\d+)", timeout=30).group(1))
        p.wait_for("Application startup complete.", timeout=30)
        with httpx.Client(verify=client_ctx(ca)) as client:
            assert client.get(f"https://localhost:{port}/").json()["scheme"] == "https"
        p.signal()
        assert p.wait(30) == 0
    finally:
        p.kill()
