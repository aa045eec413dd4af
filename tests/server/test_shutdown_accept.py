"""Graceful shutdown of `cicada.server.Server` must not lose a connection the loop accepted just
before the listeners closed: asyncio accepts the socket in one callback and makes the connection in
a task, so for a few iterations the server does not count it yet."""

from __future__ import annotations

import asyncio
import socket

import pytest
from apps import hello
from support.server_thread import new_loop

import cicada
from cicada.server import Server


async def _request(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


# uvloop accepts in C, where the accept cannot be held back; asyncio's and cicada's loops share
# asyncio's Python accept path.
@pytest.mark.parametrize("loop_kind", ["asyncio", "cicada"])
def test_connection_accepted_as_shutdown_begins_is_served(loop_kind):
    server = Server(cicada.Config(hello, host="127.0.0.1", port=0, lifespan="off", log_config=None))
    loop = new_loop(loop_kind)
    accept_connection = loop._accept_connection2

    stop_accepting = server._stop_accepting
    began = []

    def stop_accepting_and_note():
        stop_accepting()
        began.append(True)

    server._stop_accepting = stop_accepting_and_note

    async def accept_after_shutdown_began(*args, **kwargs):
        # Hold the accepted socket back until shutdown() has begun: the order a busy loop
        # produces when the accept callback and the shutdown step land in the same iteration.
        server.should_exit = True
        while not began:
            await asyncio.sleep(0)
        return await accept_connection(*args, **kwargs)

    loop._accept_connection2 = accept_after_shutdown_began

    async def main() -> bytes:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        response = await _request(port)
        await asyncio.wait_for(serving, 10)
        return response

    try:
        response = loop.run_until_complete(main())
    finally:
        loop.close()
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b"hello")
