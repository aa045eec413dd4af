"""TLS (--ssl-*): https and wss served by the CLI on every loop, client certificates, and clear
errors for bad certificate options. Certificates come from the openssl command (a throwaway CA),
so no certificate library is loaded into the test process."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import websockets

from cicada_proc import CicadaProcess, run_cli, started_processes

LOOPS = ["asyncio", "uvloop", "cicada"]

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(d: Path, name: str, cn: str, ext: str) -> None:
    """name.key + name.pem signed by the CA in d, with the given X.509 extensions."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    (d / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=d)


class Certs:
    def __init__(self, d: Path) -> None:
        self.dir = d
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=cicada test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        _issue(d, "server", "localhost",
               "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
               "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        _issue(d, "client", "client@example.com",
               "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
        (d / "both.pem").write_bytes((d / "server.key").read_bytes() + (d / "server.pem").read_bytes())
        _openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:s3cret", "-out", "enc.key", cwd=d)

    def __truediv__(self, name: str) -> Path:
        return self.dir / {"cert.pem": "server.pem", "key.pem": "server.key"}.get(name, name)

    def client_ctx(self, with_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
        if with_cert:
            ctx.load_cert_chain(str(self.dir / "client.pem"), str(self.dir / "client.key"))
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def serve():
    yield from started_processes("testapps:tls_app", "--port", "0")


@pytest.mark.parametrize("loop", LOOPS)
def test_https_keep_alive_and_upload(serve, certs, loop):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"), "--loop", loop)
    port = p.wait_port()
    assert f"running on https://127.0.0.1:{port}" in p.output
    with httpx.Client(verify=certs.client_ctx(), base_url=f"https://localhost:{port}") as client:
        for i in range(3):  # one TLS connection, reused
            r = client.get(f"/n{i}")
            assert r.status_code == 200 and r.json() == {"scheme": "https", "received": 0, "path": f"/n{i}"}
        big = b"x" * (3 * 1024 * 1024 + 17)
        assert client.post("/upload", content=big).json()["received"] == len(big)
    assert p.stop() == 0


def test_https_large_download(serve, certs):
    p = serve("--ssl-certfile", str(certs / "both.pem"))  # key inside the certificate file
    port = p.wait_port()
    with httpx.Client(verify=certs.client_ctx()) as client:
        r = client.get(f"https://localhost:{port}/download?n=5000000&chunk=65536")
        assert r.status_code == 200 and len(r.content) == 5000000
    assert p.stop() == 0


@pytest.mark.parametrize("loop", ["uvloop", "cicada"])
def test_wss(serve, certs, loop):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"), "--loop", loop)
    port = p.wait_port()

    async def talk():
        async with websockets.connect(f"wss://localhost:{port}/ws", ssl=certs.client_ctx()) as ws:
            scheme = await ws.recv()
            await ws.send(b"\x00" * 100_000)
            echoed = await ws.recv()
            return scheme, echoed

    scheme, echoed = asyncio.run(talk())
    assert scheme == "wss" and echoed == b"\x00" * 100_000
    assert p.stop() == 0


def test_client_certificate_required(serve, certs):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"),
              "--ssl-cert-reqs", "2", "--ssl-ca-certs", str(certs / "ca.pem"))
    port = p.wait_port()
    with httpx.Client(verify=certs.client_ctx(with_cert=True)) as client:
        assert client.get(f"https://localhost:{port}/").json()["scheme"] == "https"
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        with httpx.Client(verify=certs.client_ctx()) as client:
            client.get(f"https://localhost:{port}/")
    # The server keeps serving after the refused handshake.
    with httpx.Client(verify=certs.client_ctx(with_cert=True)) as client:
        assert client.get(f"https://localhost:{port}/").status_code == 200
    assert p.stop() == 0


def test_plain_http_and_garbage_on_tls_port_do_not_hurt(serve, certs):
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
    with httpx.Client(verify=certs.client_ctx()) as client:
        assert client.get(f"https://localhost:{port}/").status_code == 200
    assert p.stop() == 0


def test_workers_serve_tls(serve, certs):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"), "--workers", "2")
    port = p.wait_port()
    p.wait_for("Application startup complete", timeout=30)
    with httpx.Client(verify=certs.client_ctx()) as client:
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


def test_encrypted_key_password(certs, serve):
    base = ["testapps:tls_app", "--port", "0", "--ssl-certfile", str(certs / "cert.pem"),
            "--ssl-keyfile", str(certs / "enc.key")]
    r = run_cli([*base, "--ssl-keyfile-password", "wrong"])
    assert r.returncode == 2 and "Invalid value for '--ssl-keyfile-password'" in r.stderr, r.stderr
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "enc.key"),
              "--ssl-keyfile-password", "s3cret")
    port = p.wait_port()
    with httpx.Client(verify=certs.client_ctx()) as client:
        assert client.get(f"https://localhost:{port}/").status_code == 200
    assert p.stop() == 0


def test_encrypted_key_without_password_is_refused_not_prompted(certs):
    r = run_cli(["testapps:tls_app", "--port", "0", "--ssl-certfile", str(certs / "cert.pem"),
                 "--ssl-keyfile", str(certs / "enc.key")], timeout=20)
    assert r.returncode == 2 and "Invalid value for '--ssl-keyfile-password'" in r.stderr, r.stderr
    assert "is encrypted" in r.stderr


def test_gunicorn_cicada_worker_with_tls(certs):
    p = CicadaProcess(["-b", "127.0.0.1:0", "-w", "1", "-k", "cicada.workers.CicadaWorker",
                       "--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / "key.pem"),
                       "testapps:tls_app"], module="gunicorn")
    try:
        port = int(p.wait_for(r"Listening at: https?://127\.0\.0\.1:(\d+)", timeout=30).group(1))
        p.wait_for("Application startup complete.", timeout=30)
        with httpx.Client(verify=certs.client_ctx()) as client:
            assert client.get(f"https://localhost:{port}/").json()["scheme"] == "https"
        p.signal()
        assert p.wait(30) == 0
    finally:
        p.kill()


def _get_tls_scope(port: int, ctx: ssl.SSLContext) -> tuple[dict, ssl.SSLSocket]:
    """GET /tls over a raw TLS socket: (the app's JSON, the socket, for what it negotiated)."""
    import json

    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"GET /tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    return json.loads(body), s


def _suite_id(ctx: ssl.SSLContext, name: str) -> int:
    return next(c["id"] & 0xFFFF for c in ctx.get_ciphers() if c["name"] == name)


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_scope_extension(serve, certs, loop):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"), "--loop", loop)
    port = p.wait_port()
    ctx = certs.client_ctx()
    for _ in range(2):
        got, s = _get_tls_scope(port, ctx)
        tls = got["tls"]
        assert tls is not None and "tls" in got["keys"]
        assert tls["server_cert"] == ssl.DER_cert_to_PEM_cert(
            ssl.PEM_cert_to_DER_cert((certs / "cert.pem").read_text()))
        assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
        assert tls["client_cert_error"] is None
        assert tls["tls_version"] == {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}[s.version()]
        assert tls["cipher_suite"] == _suite_id(ctx, s.cipher()[0])
        s.close()
    # TLS 1.2 too: a different version and suite numbering.
    ctx12 = certs.client_ctx()
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    got, s = _get_tls_scope(port, ctx12)
    assert got["tls"]["tls_version"] == 0x0303 and s.version() == "TLSv1.2"
    assert got["tls"]["cipher_suite"] == _suite_id(ctx12, s.cipher()[0])
    s.close()
    assert p.stop() == 0


def test_tls_scope_extension_with_client_certificate(serve, certs):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"),
              "--ssl-cert-reqs", "2", "--ssl-ca-certs", str(certs / "ca.pem"))
    port = p.wait_port()
    got, s = _get_tls_scope(port, certs.client_ctx(with_cert=True))
    s.close()
    tls = got["tls"]
    client_pem = ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert((certs / "client.pem").read_text()))
    assert tls["client_cert_chain"][0] == client_pem
    assert tls["client_cert_name"] == "CN=client@example.com"
    assert p.stop() == 0


def test_no_tls_scope_extension_without_tls(serve):
    p = serve()
    port = p.wait_port()
    r = httpx.get(f"http://127.0.0.1:{port}/tls")
    assert r.json() == {"tls": None, "keys": ["http.response.pathsend", "http.response.trailers"]}
    assert p.stop() == 0


@pytest.mark.parametrize("loop", ["uvloop", "cicada"])
def test_wss_scope_has_the_tls_extension(serve, certs, loop):
    p = serve("--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile", str(certs / "key.pem"), "--loop", loop)
    port = p.wait_port()

    async def talk():
        async with websockets.connect(f"wss://localhost:{port}/wstls", ssl=certs.client_ctx()) as ws:
            return await ws.recv()

    assert asyncio.run(talk()) in (str(0x0303), str(0x0304))
    assert p.stop() == 0
