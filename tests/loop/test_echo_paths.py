"""The loop's echo hot paths: the transport's direct (FIONREAD-sized) reads of large chunks, and the
C sock_recv / sock_recv_into / sock_sendall / sock_accept / sock_connect waiters (loop/sock.c):
parked waiters completed by epoll, cancellation, peer close, two waiters on one fd, and the errors
asyncio raises."""

from __future__ import annotations

import asyncio
import socket

from cicada.loop import Loop


def run(coro, **kw):
    lp = Loop(**kw)
    try:
        return lp.run_until_complete(coro)
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

    run(main())
