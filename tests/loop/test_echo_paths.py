"""The loop's echo hot paths: the transport's direct (FIONREAD-sized) reads of large chunks, and the
C sock_recv / sock_recv_into / sock_sendall / sock_accept / sock_connect waiters (loop/sock.c):
parked waiters completed by epoll, cancellation, peer close, two waiters on one fd, and the errors
asyncio raises."""

from __future__ import annotations

import asyncio
import socket

import pytest

from cicada import _core
from cicada.loop import Loop

LOOPS = {"cicada": Loop, "asyncio": asyncio.SelectorEventLoop}


def run_on(kind, coro_fn, debug=False):
    lp = LOOPS[kind]()
    lp.set_debug(debug)
    try:
        return lp.run_until_complete(coro_fn(lp))
    finally:
        lp.close()


class Chunks(asyncio.Protocol):
    def __init__(self):
        self.chunks = []
        self.eof = asyncio.get_running_loop().create_future()

    def connection_made(self, t):
        self.t = t

    def data_received(self, d):
        assert type(d) is bytes
        self.chunks.append(d)

    def eof_received(self):
        self.eof.set_result(None)


def test_large_reads_arrive_whole_and_in_order_then_small_ones_and_eof():
    big = bytes(range(256)) * 1600  # 400 KiB: more than one read's worth
    small = b"tail"

    async def main():
        loop = asyncio.get_running_loop()
        protos = []
        srv = await loop.create_server(lambda: protos.append(Chunks()) or protos[-1],
                                       "127.0.0.1", 0)
        c = socket.create_connection(srv.sockets[0].getsockname())
        c.setblocking(False)
        await loop.sock_sendall(c, big)
        while not protos or sum(map(len, protos[0].chunks)) < len(big):
            await asyncio.sleep(0.001)
        await loop.sock_sendall(c, small)
        while sum(map(len, protos[0].chunks)) < len(big) + len(small):
            await asyncio.sleep(0.001)
        c.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(protos[0].eof, 5)
        p = protos[0]
        assert b"".join(p.chunks) == big + small
        # Large chunks came through more than one read, so the sized-read path ran.
        assert len(p.chunks) >= 2 and max(map(len, p.chunks)) >= 32 * 1024
        p.t.close()
        c.close()
        srv.close()
        await srv.wait_closed()

    run_on("cicada", lambda loop: main())


# ---- sock_* in C ---------------------------------------------------------------------------


def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def spin(n=3):
    for _ in range(n):
        await asyncio.sleep(0)


def counts():
    c = _core._loop_counters()
    return c["sock_parked"], c["sock_completed"], c["direct_reads"]


def test_parked_recv_is_completed_in_c():
    async def main(loop):
        a, b = pair()
        before = counts()
        t = loop.create_task(loop.sock_recv(a, 100))
        await spin()
        assert not t.done()
        b.send(b"hello")
        assert await t == b"hello"
        after = counts()
        assert after[0] - before[0] == 1 and after[1] - before[1] == 1
        # Immediate data: no parking at all.
        b.send(b"again")
        await spin()
        assert await loop.sock_recv(a, 100) == b"again"
        assert counts()[0] == after[0]
        a.close()
        b.close()

    run_on("cicada", main)


@pytest.mark.parametrize("kind", ["cicada", "asyncio"])
def test_cancel_while_parked_loses_no_data_and_frees_the_fd(kind):
    async def main(loop):
        a, b = pair()
        t = loop.create_task(loop.sock_recv(a, 100))
        await spin()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await spin()
        b.send(b"kept")
        await spin()
        # The watcher is gone: a plain reader can take the fd, and the data is still there.
        got = loop.create_future()
        loop.add_reader(a.fileno(), lambda: got.done() or got.set_result(a.recv(100)))
        assert await asyncio.wait_for(got, 5) == b"kept"
        assert loop.remove_reader(a.fileno())
        a.close()
        b.close()

    run_on(kind, main)


@pytest.mark.parametrize("kind", ["cicada", "asyncio"])
def test_peer_closes_while_parked(kind):
    async def main_eof(loop):
        a, b = pair()
        buf = bytearray(10)
        t = loop.create_task(loop.sock_recv_into(a, buf))
        await spin()
        b.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(t, 5) == 0
        a.close()
        b.close()

    async def main_simple(loop):
        a, b = pair()
        t = loop.create_task(loop.sock_recv(a, 100))
        await spin()
        b.close()
        assert await asyncio.wait_for(t, 5) == b""
        a.close()

    run_on(kind, main_simple)
    run_on(kind, main_eof)


@pytest.mark.parametrize("kind", ["cicada", "asyncio"])
def test_two_waiters_on_one_fd_the_second_wins(kind):
    async def main(loop):
        a, b = pair()
        t1 = loop.create_task(loop.sock_recv(a, 100))
        await spin()
        t2 = loop.create_task(loop.sock_recv(a, 100))
        await spin()
        b.send(b"data")
        assert await asyncio.wait_for(t2, 5) == b"data"
        await spin()
        assert not t1.done()  # asyncio's add_reader replaced its handle: it is stranded
        t1.cancel()
        await spin()
        # Cancelling the stranded one does not disturb a later waiter on the same fd.
        t3 = loop.create_task(loop.sock_recv(a, 100))
        await spin()
        b.send(b"more")
        assert await asyncio.wait_for(t3, 5) == b"more"
        a.close()
        b.close()

    run_on(kind, main)


@pytest.mark.parametrize("kind", ["cicada", "asyncio"])
def test_sendall_partial_sends_complete_in_order(kind):
    payload = bytes(range(256)) * 20000  # 5 MB: far beyond the socket buffers

    async def main(loop):
        a, b = pair()
        t = loop.create_task(loop.sock_sendall(a, payload))
        await spin()
        assert not t.done()
        got = bytearray()
        while len(got) < len(payload):
            chunk = await loop.sock_recv(b, 1 << 20)
            assert chunk
            got += chunk
        assert await asyncio.wait_for(t, 5) is None
        assert got == payload
        # recv_into of the tail of a stream, with a memoryview target
        await loop.sock_sendall(a, b"xyz")
        buf = bytearray(8)
        n = await loop.sock_recv_into(b, memoryview(buf)[2:])
        assert n == 3 and bytes(buf[2:5]) == b"xyz"
        a.close()
        b.close()

    run_on(kind, main)


@pytest.mark.parametrize("kind", ["cicada", "asyncio"])
def test_cancel_parked_sendall_frees_the_writer(kind):
    async def main(loop):
        a, b = pair()
        t = loop.create_task(loop.sock_sendall(a, b"x" * (8 << 20)))
        await spin()
        assert not t.done()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await spin()
        assert not loop.remove_writer(a.fileno())
        a.close()
        b.close()

    run_on(kind, main)


@pytest.mark.parametrize("kind", ["cicada", "asyncio"])
def test_parked_accept_and_recv_on_the_accepted_socket(kind):
    async def main(loop):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        srv.setblocking(False)
        t = loop.create_task(loop.sock_accept(srv))
        await spin()
        assert not t.done()
        c = socket.socket()
        c.setblocking(False)
        await loop.sock_connect(c, srv.getsockname())
        conn, addr = await asyncio.wait_for(t, 5)
        assert conn.gettimeout() == 0 and addr == c.getsockname()
        await loop.sock_sendall(c, b"ping")
        assert await loop.sock_recv(conn, 10) == b"ping"
        for s in (conn, c, srv):
            s.close()

    run_on(kind, main)


@pytest.mark.parametrize("kind", ["cicada", "asyncio"])
def test_errors_match_asyncio(kind):
    async def main(loop):
        a, b = pair()
        with pytest.raises(ValueError, match="negative buffersize"):
            await loop.sock_recv(a, -1)
        with pytest.raises(TypeError):
            await loop.sock_sendall(a, "text")
        with pytest.raises(TypeError):
            await loop.sock_recv_into(a, b"read-only")
        # A transport owns the fd: parking there is refused with asyncio's message.
        tr, _ = await loop.create_connection(asyncio.Protocol, sock=b)
        with pytest.raises(RuntimeError, match="is used by transport"):
            await loop.sock_recv(b, 10)
        tr.close()
        await spin()
        a.close()
        with pytest.raises(OSError):
            await loop.sock_recv(a, 10)
        with pytest.raises(OSError):
            await loop.sock_sendall(a, b"x")

    run_on(kind, main)


@pytest.mark.parametrize("kind", ["cicada", "asyncio"])
def test_debug_mode_refuses_blocking_sockets(kind):
    async def main(loop):
        a, b = socket.socketpair()
        for call in (lambda: loop.sock_recv(a, 1), lambda: loop.sock_sendall(a, b"x"),
                     lambda: loop.sock_recv_into(a, bytearray(1)), lambda: loop.sock_accept(a)):
            with pytest.raises(ValueError, match="non-blocking"):
                await call()
        a.close()
        b.close()

    run_on(kind, main, debug=True)


def test_ssl_sockets_are_refused():
    ssl = pytest.importorskip("ssl")

    async def main(loop):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        s = ctx.wrap_socket(socket.socket(), do_handshake_on_connect=False)
        with pytest.raises(TypeError, match="SSLSocket"):
            await loop.sock_recv(s, 1)
        with pytest.raises(TypeError, match="SSLSocket"):
            await loop.sock_sendall(s, b"x")
        s.close()

    run_on("cicada", main)


def test_closed_loop_refuses_to_park():
    lp = Loop()
    lp.close()
    a, b = pair()

    async def go():
        return await lp.sock_recv(a, 1)

    coro = go()
    with pytest.raises(RuntimeError, match="closed"):
        coro.send(None)
    a.close()
    b.close()


def test_fd_reused_right_after_a_completed_wait_is_registered_again():
    # A waiter completes (its interest is kept until the iteration ends), the socket is closed
    # and a new one gets the same fd number in the same iteration: it must still be watched.
    async def main(loop):
        a, b = pair()
        t = loop.create_task(loop.sock_recv(a, 10))
        await spin()
        b.send(b"1")

        async def reuse():
            assert await t == b"1"
            fd = a.fileno()
            a.close()
            b.close()
            c, d = pair()
            assert fd in (c.fileno(), d.fileno())
            mine, other = (c, d) if c.fileno() == fd else (d, c)
            r = loop.create_task(loop.sock_recv(mine, 10))
            await spin()
            other.send(b"2")
            assert await asyncio.wait_for(r, 5) == b"2"
            c.close()
            d.close()

        await reuse()

    run_on("cicada", main)


def test_many_connections_echo_through_sock_calls():
    async def main(loop):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        srv.setblocking(False)

        async def serve_one(c):
            while data := await loop.sock_recv(c, 65536):
                await loop.sock_sendall(c, data)
            c.close()

        async def acceptor():
            for _ in range(20):
                c, _ = await loop.sock_accept(srv)
                loop.create_task(serve_one(c))

        acc = loop.create_task(acceptor())

        async def client(i):
            c = socket.socket()
            c.setblocking(False)
            await loop.sock_connect(c, srv.getsockname())
            for j in range(50):
                msg = f"{i}:{j}:".encode() * (1 + j * 37)
                await loop.sock_sendall(c, msg)
                got = b""
                while len(got) < len(msg):
                    got += await loop.sock_recv(c, 65536)
                assert got == msg
            c.close()

        await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(20))), 30)
        await acc
        srv.close()

    run_on("cicada", main)


def test_large_sock_recv_reads_sized_chunks_and_small_ones_after():
    payload = bytes(range(256)) * 2000  # 500 KiB

    async def main(loop):
        a, b = pair()
        before = counts()[2]
        sender = loop.create_task(loop.sock_sendall(b, payload))
        got = bytearray()
        sizes = []
        while len(got) < len(payload):
            chunk = await loop.sock_recv(a, 1 << 20)
            sizes.append(len(chunk))
            got += chunk
        await sender
        assert got == payload
        assert counts()[2] > before  # some reads were sized with FIONREAD
        # A small message after large ones, then EOF: the usual path still sees both.
        await loop.sock_sendall(b, b"end")
        assert await loop.sock_recv(a, 1 << 20) == b"end"
        b.close()
        assert await loop.sock_recv(a, 1 << 20) == b""
        a.close()

    run_on("cicada", main)


def test_socket_subclasses_keep_their_own_methods():
    class Counting(socket.socket):
        calls = 0

        def recv(self, n, *a):
            Counting.calls += 1
            return super().recv(n, *a)

    async def main(loop):
        a, b = socket.socketpair()
        sub = Counting(fileno=a.detach())
        sub.setblocking(False)
        b.setblocking(False)
        t = loop.create_task(loop.sock_recv(sub, 10))
        await spin()
        b.send(b"hi")
        assert await asyncio.wait_for(t, 5) == b"hi"
        assert Counting.calls >= 1  # asyncio's code ran, calling the subclass's recv
        sub.close()
        b.close()

    run_on("cicada", main)


@pytest.mark.parametrize("kind", ["cicada", "asyncio"])
def test_cancelled_accept_loses_no_connection(kind):
    async def main(loop):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        srv.setblocking(False)
        t = loop.create_task(loop.sock_accept(srv))
        await spin()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        c = socket.create_connection(srv.getsockname())
        await spin()
        conn, _ = await asyncio.wait_for(loop.sock_accept(srv), 5)
        c.sendall(b"still here")
        assert await asyncio.wait_for(loop.sock_recv(conn, 100), 5) == b"still here"
        for s in (conn, c, srv):
            s.close()

    run_on(kind, main)
