"""Real client libraries on cicada's loop against real servers started here: aiohttp client and
server, asyncpg against PostgreSQL, redis-py (asyncio) against Redis. Each test skips, naming
what is missing, when the library or the server binary is absent (`make sysdeps` installs them)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import cicada.loop


def server_env() -> dict:
    """The environment for server processes: without the sanitizer preload of `make asan`
    (PostgreSQL and Redis are not built for it and hang or abort under it)."""
    env = dict(os.environ)
    for k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC"):
        env.pop(k, None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def test_aiohttp_client_and_server():
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web

    async def main():
        async def hello(request):
            return web.json_response({"path": request.path, "q": request.query.get("q")})

        async def echo(request):
            return web.Response(body=await request.read())

        app = web.Application()
        app.router.add_get("/{tail:.*}", hello)
        app.router.add_post("/echo", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        try:
            async with aiohttp.ClientSession() as s:
                async def one(i):
                    async with s.get(f"http://127.0.0.1:{port}/x{i}", params={"q": str(i)}) as r:
                        return await r.json()

                got = await asyncio.gather(*(one(i) for i in range(30)))
                big = os.urandom(1 << 20)
                async with s.post(f"http://127.0.0.1:{port}/echo", data=big) as r:
                    echoed = await r.read()
        finally:
            await runner.cleanup()
        return got, echoed == big

    got, ok = cicada.loop.run(main())
    assert got == [{"path": f"/x{i}", "q": str(i)} for i in range(30)]
    assert ok


@pytest.fixture
def redis_port(tmp_path):
    exe = shutil.which("redis-server")
    if not exe:
        pytest.skip("redis-server not installed (make sysdeps installs it)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=server_env())
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_py_asyncio(redis_port):
    redis = pytest.importorskip("redis.asyncio")

    async def main():
        r = redis.Redis(host="127.0.0.1", port=redis_port)
        try:
            await r.set("k", "v")
            vals = await asyncio.gather(*(r.incr("n") for _ in range(100)))
            async with r.pipeline() as p:
                p.set("a", 1).get("a").delete("a")
                piped = await p.execute()
            return await r.get("k"), max(vals), piped
        finally:
            await r.aclose() if hasattr(r, "aclose") else await r.close()

    assert cicada.loop.run(main()) == (b"v", 100, [True, b"1", 1])


def _pg_bin(name):
    for d in ["/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"]:
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    return shutil.which(name)


@pytest.fixture
def pg_port():
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not initdb or not postgres:
        pytest.skip("PostgreSQL not installed (make sysdeps installs it)")
    # Not pytest's tmp_path: its parent is private to root and postgres must not run as root.
    top = tempfile.mkdtemp(prefix="cicada-pg-")
    data = os.path.join(top, "data")
    os.mkdir(data)
    prefix = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user")
        os.chmod(top, 0o755)
        os.chown(data, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    proc = None
    try:
        subprocess.run(prefix + [initdb, "-D", data, "-A", "trust", "-U", "postgres"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                       env=server_env(), timeout=120)
        port = free_port()
        proc = subprocess.Popen(prefix + [postgres, "-D", data, "-p", str(port), "-h",
                                          "127.0.0.1", "-k", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                                env=server_env())
        wait_port(port)
        yield port
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        shutil.rmtree(top, ignore_errors=True)


def test_asyncpg(pg_port):
    asyncpg = pytest.importorskip("asyncpg")

    async def connect():
        # The port opens before the server accepts sessions ("the database system is starting up").
        for _ in range(200):
            try:
                return await asyncpg.connect(host="127.0.0.1", port=pg_port, user="postgres",
                                             database="postgres")
            except asyncpg.exceptions.CannotConnectNowError:
                await asyncio.sleep(0.05)
        raise RuntimeError("PostgreSQL did not become ready")

    async def main():
        conn = await connect()
        try:
            await conn.execute("CREATE TABLE t (id int primary key, name text)")
            await conn.executemany("INSERT INTO t VALUES ($1, $2)",
                                   [(i, f"n{i}") for i in range(200)])
            rows = await conn.fetch("SELECT id, name FROM t WHERE id % 50 = 0 ORDER BY id")
            async with conn.transaction():
                await conn.execute("DELETE FROM t WHERE id >= 100")
            count = await conn.fetchval("SELECT count(*) FROM t")
            pool = await asyncpg.create_pool(host="127.0.0.1", port=pg_port, user="postgres",
                                             database="postgres", min_size=2, max_size=4)
            sums = await asyncio.gather(*(pool.fetchval("SELECT $1::int + 1", i)
                                          for i in range(20)))
            await pool.close()
            return [tuple(r) for r in rows], count, sums
        finally:
            await conn.close()

    rows, count, sums = cicada.loop.run(main())
    assert rows == [(0, "n0"), (50, "n50"), (100, "n100"), (150, "n150")]
    assert count == 100
    assert sums == [i + 1 for i in range(20)]
