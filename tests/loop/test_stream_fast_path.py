"""The transport's asyncio-streams fast path (loop/transport.c, read_stream): with exactly
asyncio's StreamReaderProtocol and StreamReader, reads go straight into the reader's buffer and
the transport does feed_data()'s work itself. Every scenario runs with the fast path on and off
(and most on asyncio's own loop too) and must come out the same: data at every split point,
readline/readexactly/readuntil, pause and resume at 2 * limit, EOF, exceptions, cancelled reads, a
collected reader, and subclasses or patched methods, which must take the generic path."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys

import pytest

from cicada import _core
from cicada.loop import Loop


# The versions whose asyncio streams the fast path was checked against (transport.c,
# load_streams); elsewhere every scenario must still pass, on the generic path.
FAST_PATH_VERSIONS = (3, 11) <= sys.version_info[:2] <= (3, 13)


@pytest.fixture(params=["fast", "generic"])
def mode(request):
    was = _core._set_stream_fast_path(request.param == "fast")
    yield request.param
    _core._set_stream_fast_path(was)


def stream_reads():
    return _core._loop_counters()["stream_reads"]


def run(coro_fn, loop_factory=Loop):
    lp = loop_factory()
    try:
        return lp.run_until_complete(coro_fn())
    finally:
        lp.close()


async def serve(handler, limit=2**16):
    """A streams server on loopback and a raw non-blocking client socket connected to it."""
    srv = await asyncio.start_server(handler, "127.0.0.1", 0, limit=limit)
    c = socket.create_connection(srv.sockets[0].getsockname())
    c.setblocking(False)
    return srv, c


async def close(srv, c):
    c.close()
    srv.close()
    await srv.wait_closed()


def check_fast_path_used(mode, before):
    if mode == "fast" and FAST_PATH_VERSIONS:
        assert stream_reads() > before
    else:
        assert stream_reads() == before


# ---- data integrity ----------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 1200  # 300 KiB: several reads, some of them large (FIONREAD-sized)
SPLITS = [1, 2, 7, 1023, 1024, 1025, 4096, 65535, 65536, 65537, 100 * 1024, 131072]


@pytest.mark.parametrize("chunk", SPLITS)
def test_read_n_gets_every_byte_in_order_at_any_split(mode, chunk):
    got = bytearray()
    payload = PAYLOAD[:chunk * 3000]  # tiny chunks: fewer of them

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        async def handler(r, w):
            while True:
                d = await r.read(chunk)
                if not d:
                    break
                assert type(d) is bytes and len(d) <= chunk
                got.extend(d)
            w.close()
            done.set_result(None)

        before = stream_reads()
        srv, c = await serve(handler)
        for i in range(0, len(payload), chunk):
            await loop.sock_sendall(c, payload[i:i + chunk])
        c.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(done, 10)
        check_fast_path_used(mode, before)
        await close(srv, c)

    run(main)
    assert bytes(got) == payload


def test_large_reads_go_straight_into_the_buffer(mode):
    async def main():
        loop = asyncio.get_running_loop()
        out = loop.create_future()

        async def handler(r, w):
            out.set_result(await r.readexactly(len(PAYLOAD)))
            w.close()

        direct = _core._loop_counters()["direct_reads"]
        srv, c = await serve(handler, limit=len(PAYLOAD))
        await loop.sock_sendall(c, PAYLOAD)
        assert await asyncio.wait_for(out, 10) == PAYLOAD
        if mode == "fast" and FAST_PATH_VERSIONS:
            assert _core._loop_counters()["direct_reads"] > direct
        await close(srv, c)

    run(main)


def test_readline_readuntil_readexactly_over_many_small_packets(mode):
    lines = [b"x" * n + b"\n" for n in (0, 1, 5, 300, 5000)]
    blob = b"".join(lines) + b"head::body::" + b"abcdefgh" + b"tail-without-newline"
    results = []

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        async def handler(r, w):
            for _ in lines:
                results.append(await r.readline())
            results.append(await r.readuntil(b"::"))
            results.append(await r.readuntil(b"::"))
            results.append(await r.readexactly(8))
            results.append(await r.readline())  # EOF before the newline: the partial line
            results.append(await r.read())
            results.append(r.at_eof())
            w.close()
            done.set_result(None)

        srv, c = await serve(handler)
        for i in range(0, len(blob), 3):  # 3-byte packets: separators split across reads
            await loop.sock_sendall(c, blob[i:i + 3])
            await asyncio.sleep(0)
        c.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(done, 10)
        await close(srv, c)

    run(main)
    assert results == lines + [b"head::", b"body::", b"abcdefgh", b"tail-without-newline", b"",
                               True]


def test_echo_through_stream_writer(mode):
    async def main():
        async def handler(r, w):
            while d := await r.read(65536):
                w.write(d)
                await w.drain()
            w.close()

        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        r, w = await asyncio.open_connection(*srv.sockets[0].getsockname())
        for size in (1, 1024, 100 * 1024, 300 * 1024):
            msg = bytes([size % 251]) * size
            w.write(msg)
            await w.drain()
            assert await r.readexactly(size) == msg
        w.close()
        await w.wait_closed()
        srv.close()
        await srv.wait_closed()

    run(main)


# ---- flow control --------------------------------------------------------------------------------


@pytest.mark.parametrize("loop_factory", [Loop, asyncio.SelectorEventLoop], ids=["cicada", "asyncio"])
def test_pause_past_twice_the_limit_and_resume_when_drained(mode, loop_factory):
    limit = 1024
    seen = {}

    async def main():
        loop = asyncio.get_running_loop()
        go = asyncio.Event()
        done = loop.create_future()

        async def handler(r, w):
            seen["reader"] = r
            await go.wait()
            seen["paused"] = r._paused
            seen["reading"] = w.transport.is_reading()
            seen["buffered"] = len(r._buffer)
            data = await r.readexactly(50_000)
            seen["after_paused"] = r._paused
            seen["after_reading"] = w.transport.is_reading()
            done.set_result(data)
            w.close()

        srv, c = await serve(handler, limit=limit)
        await loop.sock_sendall(c, b"z" * 50_000)
        for _ in range(1000):  # until the server has read past 2 * limit and paused
            if "reader" in seen and seen["reader"]._paused:
                break
            await asyncio.sleep(0.005)
        go.set()
        assert await asyncio.wait_for(done, 10) == b"z" * 50_000
        await close(srv, c)

    run(main, loop_factory)
    del seen["reader"]
    assert seen["paused"] is True and seen["reading"] is False
    assert seen["buffered"] > 2 * limit
    assert seen["after_paused"] is False and seen["after_reading"] is True


def test_transport_that_cannot_pause_is_forgotten(mode):
    state = {}

    class NoPause:
        def pause_reading(self):
            state["asked"] = state.get("asked", 0) + 1
            raise NotImplementedError

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        ready = asyncio.Event()

        async def handler(r, w):
            r._transport = NoPause()
            ready.set()
            while r._transport is not None:
                await asyncio.sleep(0.001)
            state["buffered"] = len(r._buffer)
            w.close()
            done.set_result(None)

        srv, c = await serve(handler, limit=100)
        await ready.wait()
        await loop.sock_sendall(c, b"q" * 1000)
        await asyncio.wait_for(done, 10)
        await close(srv, c)

    run(main)
    assert state["asked"] == 1 and state["buffered"] > 200


# ---- EOF, exceptions, cancellation -------------------------------------------------------------


def test_eof_mid_readexactly_gives_the_partial(mode):
    out = {}

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        async def handler(r, w):
            try:
                await r.readexactly(10)
            except asyncio.IncompleteReadError as e:
                out["partial"] = e.partial
            out["eof"] = r.at_eof()
            w.close()
            done.set_result(None)

        srv, c = await serve(handler)
        await loop.sock_sendall(c, b"abc")
        await asyncio.sleep(0.01)
        c.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(done, 10)
        await close(srv, c)

    run(main)
    assert out == {"partial": b"abc", "eof": True}


def test_exception_set_on_reader_is_raised_and_data_still_buffered(mode):
    out = {}

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        async def handler(r, w):
            r.set_exception(ValueError("boom"))
            while not r._buffer:
                await asyncio.sleep(0.001)
            out["buffer"] = bytes(r._buffer)
            try:
                await r.read(10)
            except ValueError as e:
                out["raised"] = str(e)
            w.close()
            done.set_result(None)

        srv, c = await serve(handler)
        await loop.sock_sendall(c, b"data")
        await asyncio.wait_for(done, 10)
        await close(srv, c)

    run(main)
    assert out == {"buffer": b"data", "raised": "boom"}


def fatal_errors(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    return errors


@pytest.mark.parametrize("loop_factory", [Loop, asyncio.SelectorEventLoop], ids=["cicada", "asyncio"])
def test_buffer_that_cannot_grow_is_a_fatal_data_received_error(mode, loop_factory):
    out = {}

    async def main():
        loop = asyncio.get_running_loop()
        errors = fatal_errors(loop)
        done = loop.create_future()

        async def handler(r, w):
            view = memoryview(r._buffer)  # an export: the bytearray can't be resized
            while not w.transport.is_closing():
                await asyncio.sleep(0.001)
            view.release()
            done.set_result(None)

        srv, c = await serve(handler)
        await loop.sock_sendall(c, b"data")
        await asyncio.wait_for(done, 10)
        await asyncio.sleep(0.01)
        out["errors"] = [(e["message"], type(e.get("exception"))) for e in errors]
        await close(srv, c)

    run(main, loop_factory)
    assert out["errors"] == [("Fatal error: protocol.data_received() call failed.", BufferError)]


def test_data_after_feed_eof_fails_as_feed_data_asserts(mode):
    # feed_data() asserts `not self._eof`; the fast path leaves such a reader to it.
    out = {}

    async def main():
        loop = asyncio.get_running_loop()
        errors = fatal_errors(loop)
        done = loop.create_future()

        async def handler(r, w):
            r.feed_eof()
            while not w.transport.is_closing():
                await asyncio.sleep(0.001)
            done.set_result(None)

        before = stream_reads()
        srv, c = await serve(handler)
        await loop.sock_sendall(c, b"late")
        await asyncio.wait_for(done, 10)
        await asyncio.sleep(0.01)
        out["errors"] = [(e["message"], type(e.get("exception"))) for e in errors]
        out["fast"] = stream_reads() - before
        await close(srv, c)

    run(main)
    assert out["errors"] == [("Fatal error: protocol.data_received() call failed.",
                              AssertionError)]
    assert out["fast"] == 0


def test_cancelled_read_then_data_then_new_read(mode):
    out = {}

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        async def handler(r, w):
            t = asyncio.ensure_future(r.read(100))
            await asyncio.sleep(0.01)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            out["waiter"] = r._waiter
            # A waiter cancelled but still in place when data comes: no set_result on it.
            r._waiter = loop.create_future()
            r._waiter.cancel()
            out["then"] = await asyncio.wait_for(_wait_buffer(r), 5)
            out["waiter_after"] = r._waiter
            out["read"] = await r.read(100)
            w.close()
            done.set_result(None)

        srv, c = await serve(handler)
        await asyncio.sleep(0.05)
        await loop.sock_sendall(c, b"hello")
        await asyncio.wait_for(done, 10)
        await close(srv, c)

    run(main)
    assert out == {"waiter": None, "then": b"hello", "waiter_after": None, "read": b"hello"}


async def _wait_buffer(r):
    while not r._buffer:
        await asyncio.sleep(0.001)
    return bytes(r._buffer)


# ---- who takes the fast path ---------------------------------------------------------------------


def read_through_generic_path(make_reader, make_protocol, payload: bytes) -> None:
    """payload sent to a transport whose protocol the factories make arrives whole, and the fast
    path reads none of it."""

    async def main():
        loop = asyncio.get_running_loop()
        reader = make_reader(loop)
        before = stream_reads()
        a, b = socket.socketpair()
        await loop.connect_accepted_socket(lambda: make_protocol(reader, loop), a)
        b.sendall(payload)
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 5) == payload
        assert stream_reads() == before
        b.close()
        await asyncio.wait_for(reader.read(), 5)

    run(main)


def plain_reader(loop):
    return asyncio.StreamReader(loop=loop)


def plain_protocol(reader, loop):
    return asyncio.StreamReaderProtocol(reader, loop=loop)


def test_subclassed_reader_takes_the_generic_path(mode):
    fed = []

    class MyReader(asyncio.StreamReader):
        def feed_data(self, data):
            fed.append(bytes(data))
            super().feed_data(data)

    read_through_generic_path(lambda loop: MyReader(loop=loop), plain_protocol, b"one")
    assert fed == [b"one"]


def test_subclassed_protocol_takes_the_generic_path(mode):
    seen = []

    class MyProto(asyncio.StreamReaderProtocol):
        def data_received(self, data):
            seen.append(bytes(data))
            super().data_received(data)

    read_through_generic_path(plain_reader, lambda r, loop: MyProto(r, loop=loop), b"two")
    assert seen == [b"two"]


@pytest.mark.parametrize("cls,name", [(asyncio.StreamReader, "feed_data"),
                                      (asyncio.StreamReader, "_wakeup_waiter"),
                                      (asyncio.StreamReaderProtocol, "data_received")])
def test_patched_class_methods_are_called(mode, monkeypatch, cls, name):
    calls = []
    original = getattr(cls, name)

    def patched(self, *args):
        calls.append(name)
        return original(self, *args)

    monkeypatch.setattr(cls, name, patched)
    read_through_generic_path(plain_reader, plain_protocol, b"three")
    assert name in calls


def test_collected_reader_drops_data_quietly(mode):
    out = {}

    async def main():
        loop = asyncio.get_running_loop()
        errors = fatal_errors(loop)
        a, b = socket.socketpair()
        reader = asyncio.StreamReader(loop=loop)
        transport, proto = await loop.connect_accepted_socket(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), a)
        del reader
        gc.collect()
        assert proto._stream_reader is None
        before = stream_reads()
        b.sendall(b"nobody reads this")
        await asyncio.sleep(0.05)
        out["fast"] = stream_reads() - before
        out["closing"] = transport.is_closing()
        transport.write(b"still writable")
        b.settimeout(5)
        out["echo"] = b.recv(100)
        transport.close()
        b.close()
        await asyncio.sleep(0.01)
        out["errors"] = errors

    run(main)
    assert out == {"fast": 0, "closing": False, "echo": b"still writable", "errors": []}


def test_fast_path_runs_for_plain_streams_on_every_loop_created():
    # Not only the first loop: the classes are loaded once per module state.
    for _ in range(2):
        async def main():
            async def handler(r, w):
                w.write(await r.readexactly(4))
                await w.drain()
                w.close()

            before = stream_reads()
            srv = await asyncio.start_server(handler, "127.0.0.1", 0)
            r, w = await asyncio.open_connection(*srv.sockets[0].getsockname())
            w.write(b"ping")
            assert await r.readexactly(4) == b"ping"
            if FAST_PATH_VERSIONS:
                assert stream_reads() >= before + 2  # server side and client side
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()

        run(main)


# ---- what the write side and create_future answer ------------------------------------------------


def test_is_closing_is_the_transport_state():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        t, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
        assert t.is_closing() is False
        t.close()
        assert t.is_closing() is True
        b.close()
        await asyncio.sleep(0.01)

    run(main)


def test_create_future_belongs_to_its_loop_running_or_not():
    other = Loop()
    try:
        fut = other.create_future()
        assert fut.get_loop() is other

        async def main():
            here = asyncio.get_running_loop()
            assert here.create_future().get_loop() is here
            # A loop that is not the running one still makes futures of its own.
            assert other.create_future().get_loop() is other

        run(main)
    finally:
        other.close()


@pytest.mark.parametrize("loop_factory", [Loop, asyncio.SelectorEventLoop], ids=["cicada", "asyncio"])
def test_protocol_missing_its_reader_attribute_fails_in_data_received(mode, loop_factory):
    out = {}

    async def main():
        loop = asyncio.get_running_loop()
        errors = fatal_errors(loop)
        a, b = socket.socketpair()
        reader = asyncio.StreamReader(loop=loop)
        transport, proto = await loop.connect_accepted_socket(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), a)
        del proto._stream_reader_wr
        b.sendall(b"x")
        for _ in range(500):
            if transport.is_closing():
                break
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.01)
        out["errors"] = [(e["message"], type(e.get("exception"))) for e in errors]
        b.close()

    run(main, loop_factory)
    # connection_lost() then trips over the same missing attribute, on every loop alike.
    assert out["errors"][0] == ("Fatal error: protocol.data_received() call failed.",
                                AttributeError)
    assert [m.split("(")[0] for m, _ in out["errors"][1:]] == [
        "Exception in callback _SelectorSocketTransport._call_connection_lost"]


def test_loop_that_made_futures_is_collected():
    # create_future() keeps a {"loop": loop} keyword dict on the loop: a cycle the GC must break.
    import weakref

    lp = Loop()
    fut = lp.create_future()
    assert fut.get_loop() is lp
    del fut
    lp.close()
    ref = weakref.ref(lp)
    del lp
    gc.collect()
    assert ref() is None
