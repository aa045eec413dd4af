"""The C stream transport (SocketTransportCore under asyncio's _SelectorSocketTransport code):
large writes with flow control, BufferedProtocol, EOF, writes after close, errors in protocol
callbacks, Unix sockets, and the Python fallback switch."""

from __future__ import annotations

import asyncio
import socket

import pytest

import cicada.loop
from cicada.loop import Loop


def run(coro, **kw):
    lp = Loop(**kw)
    try:
        return lp.run_until_complete(coro)
    finally:
        lp.close()


class Collect(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.done = asyncio.get_running_loop().create_future()
        self.paused = 0
        self.resumed = 0
        self.eof = False

    def connection_made(self, t):
        self.t = t

    def data_received(self, d):
        self.data += d

    def eof_received(self):
        self.eof = True

    def pause_writing(self):
        self.paused += 1

    def resume_writing(self):
        self.resumed += 1

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(exc)


async def _pair():
    loop = asyncio.get_running_loop()
    server_protos = []

    def factory():
        p = Collect()
        server_protos.append(p)
        return p

    srv = await loop.create_server(factory, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    t, p = await loop.create_connection(Collect, "127.0.0.1", port)
    while not server_protos:
        await asyncio.sleep(0)
    return srv, t, p, server_protos[0]


def test_is_c_transport_and_asyncio_transport():
    async def main():
        srv, t, p, sp = await _pair()
        assert type(t).__name__ == "_SocketTransport"
        assert isinstance(t, asyncio.Transport)
        assert t.get_extra_info("peername")[0] == "127.0.0.1"
        assert isinstance(t.get_extra_info("socket"), object)
        assert t.is_reading() and not t.is_closing()
        assert t.can_write_eof()
        t.close()
        await p.done
        srv.close()
        await srv.wait_closed()

    run(main())


def test_large_write_flow_control_and_eof():
    payload = bytes(range(256)) * 40000  # ~10 MB: overflows the socket buffer

    async def main():
        srv, t, p, sp = await _pair()
        sp.t.pause_reading()  # make the client's buffer grow
        t.set_write_buffer_limits(high=64 * 1024)
        t.write(payload)
        assert t.get_write_buffer_size() > 0
        assert p.paused == 1
        sp.t.resume_reading()
        t.write_eof()
        with pytest.raises(RuntimeError, match="write_eof"):
            t.write(b"x")
        while not sp.eof:
            await asyncio.sleep(0.001)
        assert bytes(sp.data) == payload
        assert p.resumed == 1
        assert t.get_write_buffer_size() == 0
        t.close()
        sp.t.close()
        srv.close()
        await srv.wait_closed()

    run(main())


def test_write_types_and_after_close(caplog):
    async def main():
        srv, t, p, sp = await _pair()
        with pytest.raises(TypeError, match="bytes-like"):
            t.write("text")
        t.write(bytearray(b"ab"))
        t.write(memoryview(b"cd"))
        t.writelines([b"e", b"f"])
        while len(sp.data) < 6:
            await asyncio.sleep(0.001)
        assert bytes(sp.data) == b"abcdef"
        t.abort()
        await p.done
        for _ in range(7):  # writes after the connection is lost are counted, then logged
            t.write(b"late")
        sp.t.close()
        srv.close()
        await srv.wait_closed()

    run(main())
    assert any("socket.send() raised exception" in r.getMessage() for r in caplog.records)


def test_abort_after_a_close_that_drained_its_buffer():
    # close() with data still buffered ends the connection once the buffer drains; abort() after
    # that must do nothing. asyncio's own transport raises AttributeError here (its drained close
    # does not count the connection lost); uvloop's does nothing.
    async def main():
        srv, t, p, sp = await _pair()
        sp.t.pause_reading()
        t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        t.write(b"x" * 1_000_000)  # more than the socket buffers take
        assert t.get_write_buffer_size() > 0
        t.close()
        sp.t.resume_reading()
        assert await p.done is None
        await sp.done
        assert len(sp.data) == 1_000_000
        t.abort()
        t.close()
        t.write(b"late")  # counted like any write after the connection is lost
        sp.t.close()
        srv.close()
        await srv.wait_closed()

    run(main())


def test_protocol_error_goes_to_handler():
    class Boom(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            raise ValueError("bad data")

        def connection_lost(self, exc):
            self.lost = exc

    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
        protos = []
        srv = await loop.create_server(lambda: protos.append(Boom()) or protos[-1],
                                       "127.0.0.1", 0)
        r, w = await asyncio.open_connection(*srv.sockets[0].getsockname())
        w.write(b"hello")
        assert await r.read() == b""  # server side closed by the fatal error
        assert "data_received() call failed" in seen[0]["message"]
        assert isinstance(seen[0]["exception"], ValueError)
        w.close()
        srv.close()
        await srv.wait_closed()

    run(main())


def test_buffered_protocol():
    class BP(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(7)  # odd size: many small reads
            self.got = bytearray()
            self.done = asyncio.get_running_loop().create_future()

        def get_buffer(self, hint):
            return self.buf

        def buffer_updated(self, n):
            self.got += self.buf[:n]

        def eof_received(self):
            self.done.set_result(bytes(self.got))

    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        srv = await loop.create_server(lambda: protos.append(BP()) or protos[-1], "127.0.0.1", 0)
        r, w = await asyncio.open_connection(*srv.sockets[0].getsockname())
        w.write(b"0123456789" * 100)
        w.write_eof()
        while not protos:
            await asyncio.sleep(0)
        assert await protos[0].done == b"0123456789" * 100
        w.close()
        srv.close()
        await srv.wait_closed()

    run(main())


def test_unix_stream_echo(tmp_path):
    path = str(tmp_path / "s")

    async def main():
        async def h(r, w):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
            w.close()

        srv = await asyncio.start_unix_server(h, path)
        r, w = await asyncio.open_unix_connection(path)
        assert type(w.transport).__name__ == "_SocketTransport"
        blob = b"z" * 300000
        w.write(blob)
        got = await r.readexactly(len(blob))
        w.close()
        srv.close()
        await srv.wait_closed()
        return got == blob

    assert run(main())


def test_python_transport_fallback(monkeypatch):
    monkeypatch.setenv("CICADA_C_TRANSPORT", "0")

    async def main():
        srv, t, p, sp = await _pair()
        name = type(t).__name__
        t.close()
        sp.t.close()
        srv.close()
        await srv.wait_closed()
        return name

    assert run(main()) == "_SelectorSocketTransport"


def test_peer_reset_reported_as_connection_lost():
    async def main():
        srv, t, p, sp = await _pair()
        sock = sp.t.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sp.t.abort()  # RST
        exc = await asyncio.wait_for(p.done, 5)
        assert exc is None or isinstance(exc, OSError)
        srv.close()
        await srv.wait_closed()

    run(main())


def test_httpx_client_against_local_server():
    httpx = pytest.importorskip("httpx")

    async def main():
        async def h(r, w):
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                if not head:
                    break
                body = b"hello " + head.split(b" ")[1]
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await w.drain()

        srv = await asyncio.start_server(h, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        async with httpx.AsyncClient() as client:
            rs = await asyncio.gather(*(client.get(f"http://127.0.0.1:{port}/p{i}")
                                        for i in range(20)))
        srv.close()
        return [r.text for r in rs]

    assert cicada.loop.run(main()) == [f"hello /p{i}" for i in range(20)]


def test_writelines_is_one_vectored_write_in_order():
    """writelines() sends every item in order, past the kernel's iovec limit (the rest is
    buffered) and past what the socket takes at once (flow control pauses and resumes)."""

    async def main():
        srv, t, p, sp = await _pair()
        items = [bytes([65 + i % 26]) * (1 + i % 7) for i in range(3000)]
        items += [bytearray(b"x" * 300_000), memoryview(b"yz")]
        t.writelines(items)
        t.writelines([])
        t.writelines(iter([b"!"]))
        want = b"".join(bytes(i) for i in items) + b"!"
        while len(sp.data) < len(want):
            await asyncio.sleep(0.001)
        assert bytes(sp.data) == want
        with pytest.raises(TypeError, match="bytes-like"):
            t.writelines([b"ok", "text"])
        t.close()
        sp.t.close()
        srv.close()
        await srv.wait_closed()

    run(main())
