"""Adversarial tests of the C socket transport (loop/transport.c) and the C sock_* calls
(loop/sock.c): hypothesis state machines drive a transport + protocol pair (and an asyncio
StreamReader on the streams fast path) over real loopback TCP sockets with random sizes, splits,
pause/resume, writes of buffers mutated after write(), mixed writelines, protocols that raise,
buffers replaced or cleared under the reader, close/abort/EOF/peer reset at random points.

Every machine also runs on asyncio's own loop: that run checks the model, so a failure on
cicada's loop only is a difference from asyncio. Bugs found are xfail(strict=True) tests with the
reason in one line; these files must run under ASan (`make asan`) where crashes show, and with
CICADA_STREAM_FAST=0 (the generic read path).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import struct
import sys

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import cicada.loop

LOOPS = {"cicada": cicada.loop.new_event_loop, "asyncio": asyncio.new_event_loop}

# CICADA_ADV_EXAMPLES=500 for a longer hunt; the default keeps the file well under a minute.
MACHINE_SETTINGS = settings(
    max_examples=int(os.environ.get("CICADA_ADV_EXAMPLES", "25")),
    # shrinking these machines can take minutes: CICADA_ADV_SHRINK=1 when reducing a failure
    phases=list(Phase) if os.environ.get("CICADA_ADV_SHRINK")
    else [p for p in Phase if p != Phase.shrink],
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def tcp_pair(sndbuf: int | None = None, rcvbuf: int | None = None):
    """A connected loopback TCP pair (a, b), both non-blocking. Small buffers force partial
    writes and the write-ready path."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    a = socket.socket()
    if sndbuf:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    a.connect(lsock.getsockname())
    b, _ = lsock.accept()
    lsock.close()
    if rcvbuf:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def drain(sock: socket.socket, into: bytearray) -> bool:
    """Read whatever is there without blocking; False once the peer is gone (EOF or error)."""
    while True:
        try:
            d = sock.recv(1 << 20)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not d:
            return False
        into += d


def spin(loop, n: int = 3) -> None:
    async def go():
        for _ in range(n):
            await asyncio.sleep(0)

    loop.run_until_complete(go())


def wait_until(loop, cond, timeout: float = 10.0, step=None) -> bool:
    async def go():
        deadline = loop.time() + timeout
        while not cond():
            if loop.time() > deadline:
                return False
            if step is not None:
                step()
            await asyncio.sleep(0.001)
        return True

    return loop.run_until_complete(go())


# ---- the transport + protocol machine ------------------------------------------------------


class Recorder(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.eof = 0
        self.lost = []
        self.raise_next = False
        self.raised = 0
        self.paused_writing = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        assert isinstance(data, bytes)
        if self.raise_next:
            self.raise_next = False
            self.raised += 1
            raise ZeroDivisionError("hostile data_received")
        self.data += data

    def eof_received(self):
        self.eof += 1
        return True  # keep the write side open, as the model expects

    def pause_writing(self):
        self.paused_writing += 1

    def resume_writing(self):
        self.paused_writing -= 1

    def connection_lost(self, exc):
        self.lost.append(exc)


class BufferedRecorder(asyncio.BufferedProtocol, Recorder):
    """get_buffer hands out a bytearray whose size varies; buffer_updated copies out of it and
    then resizes it (a buffer mutated during the callback)."""

    def __init__(self, sizes):
        Recorder.__init__(self)
        self.sizes = sizes
        self.i = 0
        self.buf = bytearray(1)

    def get_buffer(self, sizehint):
        size = self.sizes[self.i % len(self.sizes)]
        self.i += 1
        self.buf = bytearray(size)
        return self.buf

    def buffer_updated(self, nbytes):
        if self.raise_next:
            self.raise_next = False
            self.raised += 1
            raise ZeroDivisionError("hostile buffer_updated")
        self.data += self.buf[:nbytes]
        self.buf.extend(b"x" * 10)  # resizing is allowed: the view was released
        del self.buf[:]


def as_kind(data: bytes, kind: str):
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(bytearray(data))
    return memoryview(b"??" + data + b"??")[2:-2]  # a slice of a larger object


# asyncio 3.12+ keeps memoryviews of write() data and writelines() items until they are sent
# (zero copy), so a caller must not change them meanwhile (a bytearray can't even be resized:
# BufferError). cicada copies what it can't send at once, as 3.11's asyncio did: there changing
# them is allowed.
ZERO_COPY_WRITES = {"asyncio": sys.version_info >= (3, 12)}


def spoil(obj) -> None:
    """Mutate a buffer the transport was given, after write() returned."""
    if isinstance(obj, bytearray):
        obj[:] = b"Z" * (len(obj) + 3)
    elif isinstance(obj, memoryview) and not obj.readonly:
        obj[:] = b"Z" * len(obj)


def _pattern(n: int) -> bytes:
    """About n bytes that show where a piece went missing or was repeated."""
    return bytes(i % 251 for i in range(n % 1000)) * (n // 1000 + 1)


payloads = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.integers(1, 200_000).map(_pattern),
)
kinds = st.sampled_from(["bytes", "bytearray", "memoryview", "slice"])


class TransportMachine(RuleBasedStateMachine):
    loop_name = "cicada"

    @initialize(
        buffered=st.booleans(),
        sizes=st.lists(st.integers(1, 70_000), min_size=1, max_size=4),
        sndbuf=st.sampled_from([None, 4096, 65536]),
        unix=st.booleans(),
    )
    def setup(self, buffered, sizes, sndbuf, unix):
        self.loop = LOOPS[self.loop_name]()
        self.errors = []
        self.loop.set_exception_handler(lambda lp, ctx: self.errors.append(ctx))
        if unix:  # (SO_LINGER means nothing there: a "reset" is a plain close)
            a, self.peer = socket.socketpair()
            if sndbuf:
                a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            a.setblocking(False)
            self.peer.setblocking(False)
        else:
            a, self.peer = tcp_pair(sndbuf=sndbuf)  # (a tiny receive window makes TCP crawl)
        self.proto = BufferedRecorder(sizes) if buffered else Recorder()
        self.tr, _ = self.loop.run_until_complete(
            self.loop.create_connection(lambda: self.proto, sock=a)
        )
        self.sent_in = bytearray()  # what the peer sent: the protocol must get a prefix of it
        self.written = bytearray()  # what write() accepted: the peer must get a prefix of it
        self.peer_got = bytearray()
        self.closing = False  # close() or abort() called, or a fatal error
        self.aborted = False
        self.eof_written = False
        self.peer_wr_shut = False
        self.peer_gone = False  # closed, reset, or broken by an abort()
        self.peer_closed = False
        self.paused = False

    def teardown(self):
        if not hasattr(self, "loop"):
            return
        try:
            if not self.closing and not self.peer_gone:
                # everything must come through both ways
                if not self.paused:
                    assert wait_until(self.loop, lambda: len(self.proto.data) >= len(self.sent_in)
                                      or self.proto.lost)
                    if not self.proto.lost:
                        assert self.proto.data == self.sent_in
                if not self.eof_written:
                    assert wait_until(
                        self.loop,
                        lambda: len(self.peer_got) >= len(self.written),
                        step=lambda: drain(self.peer, self.peer_got),
                    )
                    assert self.peer_got == self.written
            if not self.proto.lost:
                self.tr.close()
            if not self.peer_gone:
                # let a close() with buffered data finish
                wait_until(self.loop, lambda: bool(self.proto.lost),
                           step=lambda: drain(self.peer, self.peer_got))
            else:
                wait_until(self.loop, lambda: bool(self.proto.lost), timeout=1)
            if not self.proto.lost:
                self.tr.abort()
                spin(self.loop)
            assert len(self.proto.lost) == 1, self.proto.lost
            unexpected = [c for c in self.errors
                          if not isinstance(c.get("exception"), (ZeroDivisionError, OSError))]
            assert not unexpected, unexpected
        finally:
            if not self.peer_closed:
                self.peer.close()
            self.loop.close()
            gc.collect()

    # -- the peer ----------------------------------------------------------------------------

    @precondition(lambda self: not self.peer_wr_shut and not self.peer_gone)
    @rule(data=payloads)
    def peer_sends(self, data):
        try:
            n = self.peer.send(data)
        except BlockingIOError:
            n = 0
        except OSError:  # reset by an abort()
            self.peer_gone = True
            return
        self.sent_in += data[:n]
        spin(self.loop)

    @precondition(lambda self: not self.peer_gone)
    @rule()
    def peer_reads(self):
        drain(self.peer, self.peer_got)
        spin(self.loop)

    @precondition(lambda self: not self.peer_wr_shut and not self.peer_gone)
    @rule()
    def peer_shuts_down_writing(self):
        try:
            self.peer.shutdown(socket.SHUT_WR)
        except OSError:  # reset by an abort()
            self.peer_gone = True
            return
        self.peer_wr_shut = True
        spin(self.loop)

    @precondition(lambda self: not self.peer_gone)
    @rule(hard=st.booleans())
    def peer_goes_away(self, hard):
        if hard:
            reset(self.peer)
        else:
            self.peer.close()
        self.peer_gone = self.peer_closed = True
        spin(self.loop)

    # -- the transport's user ----------------------------------------------------------------

    @precondition(lambda self: not self.eof_written and not self.proto.lost)
    @rule(data=payloads, kind=kinds, mutate=st.booleans())
    def write(self, data, kind, mutate):
        obj = as_kind(data, kind)
        self.tr.write(obj)
        if not self.closing:
            self.written += data
        if mutate and not ZERO_COPY_WRITES.get(self.loop_name):
            spoil(obj)
        spin(self.loop, 1)

    @precondition(lambda self: not self.eof_written and not self.proto.lost)
    @rule(items=st.lists(st.tuples(payloads, kinds), max_size=6), mutate=st.booleans())
    def writelines(self, items, mutate):
        objs = [as_kind(d, k) for d, k in items]
        self.tr.writelines(objs)
        if not self.closing:
            self.written += b"".join(d for d, _ in items)
        if mutate and not ZERO_COPY_WRITES.get(self.loop_name):
            for o in objs:
                spoil(o)
        spin(self.loop, 1)

    @precondition(lambda self: not self.closing and not self.eof_written)
    @rule()
    def write_eof(self):
        try:
            self.tr.write_eof()
        except OSError:  # ENOTCONN once the peer has gone (asyncio's shutdown() call)
            assert self.peer_gone
        self.eof_written = True
        spin(self.loop)

    @precondition(lambda self: not self.closing)
    @rule()
    def pause_reading(self):
        self.tr.pause_reading()
        self.paused = True

    @precondition(lambda self: not self.closing)
    @rule()
    def resume_reading(self):
        self.tr.resume_reading()
        self.paused = False
        spin(self.loop)

    @precondition(lambda self: not self.closing)
    @rule()
    def protocol_raises_next(self):
        self.proto.raise_next = True

    @precondition(lambda self: not self.closing)
    @rule()
    def close(self):
        self.tr.close()
        self.closing = True
        spin(self.loop)

    @precondition(lambda self: not self.aborted)
    @rule()
    def abort(self):
        try:
            self.tr.abort()
        except AttributeError:
            # asyncio's own transport: a close() that waited for its buffer to drain ends the
            # connection without counting it lost, and abort() then reaches for the loop it has
            # dropped (CPython 3.11-3.13). cicada's does nothing (test_transport.py).
            if self.loop_name != "asyncio" or not self.proto.lost:
                raise
        self.closing = self.aborted = True
        spin(self.loop)

    @rule(n=st.integers(1, 20))
    def run_loop(self, n):
        spin(self.loop, n)

    # -- what must hold after every step -----------------------------------------------------

    @invariant()
    def data_in_order(self):
        if not hasattr(self, "loop"):
            return
        if self.proto.raised:
            self.closing = True  # a fatal error closed the transport
        assert self.sent_in.startswith(self.proto.data)
        assert self.written.startswith(self.peer_got)
        assert len(self.proto.lost) <= 1
        if self.proto.lost:
            self.closing = True
        # (eof_received may come twice: asyncio's resume_reading() after an EOF kept open
        # re-arms the reader, which reads the EOF again)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_transport_machine(loop_name):
    machine = type(f"TransportMachine_{loop_name}", (TransportMachine,), {"loop_name": loop_name})
    run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)


# ---- the asyncio streams machine (the fast path when on) -----------------------------------


class Bytearray2(bytearray):
    pass


class StreamMachine(RuleBasedStateMachine):
    """A StreamReader fed by the transport while the test reads from it, replaces, clears or
    subclasses its _buffer and changes its limit. The reads must return exactly the bytes the
    peer sent, minus those the test threw away."""

    loop_name = "cicada"

    @initialize(limit=st.sampled_from([16, 1024, 65536, 2**20]))
    def setup(self, limit):
        self.loop = LOOPS[self.loop_name]()
        self.errors = []
        self.loop.set_exception_handler(lambda lp, ctx: self.errors.append(ctx))
        a, self.peer = tcp_pair()

        async def open_():
            return await asyncio.open_connection(sock=a, limit=limit)

        self.reader, self.writer = self.loop.run_until_complete(open_())
        self.expected = bytearray()  # sent by the peer, not yet read nor thrown away
        self.peer_done = False

    def teardown(self):
        if not hasattr(self, "loop"):
            return
        try:
            if not self.peer_done:
                self.peer.shutdown(socket.SHUT_WR)

            async def rest():
                return await asyncio.wait_for(self.reader.read(), 10)

            got = self.loop.run_until_complete(rest())
            assert got == self.expected
            self.writer.close()
            self.loop.run_until_complete(self.writer.wait_closed())
            assert not self.errors, self.errors
        finally:
            self.peer.close()
            self.loop.close()
            gc.collect()

    def buffered(self):
        return len(self.reader._buffer)

    @precondition(lambda self: not self.peer_done)
    @rule(data=payloads)
    def peer_sends(self, data):
        try:
            n = self.peer.send(data)  # a partial send when the reader has paused reading
        except BlockingIOError:
            n = 0
        self.expected += data[:n]
        spin(self.loop)

    @rule(n=st.integers(-1, 300_000), how=st.sampled_from(["read", "readexactly"]))
    def read(self, n, how):
        async def go():
            if how == "read":
                if n == 0 or not self.expected:
                    return await self.reader.read(0)
                return await asyncio.wait_for(self.reader.read(n if n > 0 else 1), 10)
            k = min(max(n, 0), len(self.expected))
            return await asyncio.wait_for(self.reader.readexactly(k), 10)

        got = self.loop.run_until_complete(go())
        assert self.expected.startswith(got)
        del self.expected[: len(got)]

    # (a line longer than the limit makes readline() throw away an amount of data that depends
    # on what had arrived by then, which the model can't know: only lines within the limit)
    @precondition(lambda self: b"\n" in self.expected
                  and self.expected.index(b"\n") <= self.reader._limit)
    @rule()
    def readline(self):
        async def go():
            return await asyncio.wait_for(self.reader.readline(), 10)

        got = self.loop.run_until_complete(go())
        assert got.endswith(b"\n") and self.expected.startswith(got)
        del self.expected[: len(got)]

    @rule(how=st.sampled_from(["copy", "subclass", "clear", "slice"]))
    def mangle_buffer(self, how):
        buf = self.reader._buffer
        if how == "copy":
            self.reader._buffer = bytearray(buf)
        elif how == "subclass":
            self.reader._buffer = Bytearray2(buf)  # the generic path from here on
        elif how == "clear":
            del self.expected[: len(buf)]
            buf.clear()
        else:
            k = len(buf) // 2
            del self.expected[:k]
            del buf[:k]
        spin(self.loop)

    @rule(limit=st.sampled_from([1, 100, 65536, 2**70]))
    def change_limit(self, limit):
        self.reader._limit = limit
        spin(self.loop)

    @rule()
    def hold_a_view_briefly(self):
        # an exported buffer can't be resized: the transport must not read while it is held
        # (nothing runs the loop meanwhile), and goes on normally afterwards
        with memoryview(self.reader._buffer):
            pass
        spin(self.loop)

    @rule(n=st.integers(1, 10))
    def run_loop(self, n):
        spin(self.loop, n)

    @invariant()
    def buffer_is_a_prefix(self):
        if hasattr(self, "loop"):
            assert self.expected.startswith(self.reader._buffer)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_stream_machine(loop_name):
    machine = type(f"StreamMachine_{loop_name}", (StreamMachine,), {"loop_name": loop_name})
    run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)



# ---- the C sock_* calls: recv / recv_into / sendall parked, cancelled, replaced -------------


class SockMachine(RuleBasedStateMachine):
    """sock_recv / sock_recv_into / sock_sendall on one socket while the peer sends and reads at
    random; pending calls are cancelled or replaced by a second call (whose first then stays
    pending, as on asyncio). The bytes the completed receives got, in completion order, must be
    the start of what the peer sent; what the peer got must be the data of the completed
    sendalls (plus at most part of a pending or cancelled one)."""

    loop_name = "cicada"

    @initialize(unix=st.booleans())
    def setup(self, unix):
        self.loop = LOOPS[self.loop_name]()
        self.errors = []
        self.loop.set_exception_handler(lambda lp, ctx: self.errors.append(ctx))
        if unix:
            self.sock, self.peer = socket.socketpair()
            self.sock.setblocking(False)
            self.peer.setblocking(False)
        else:
            self.sock, self.peer = tcp_pair(sndbuf=8192)
        self.sent_by_peer = bytearray()
        self.received = bytearray()  # completed receives, in completion order
        self.reads = []  # pending read tasks
        self.write = None  # the pending sendall task and its data
        self.write_data = b""
        self.written = bytearray()  # data of completed sendalls
        self.write_unknown = False  # a cancelled sendall sent an unknown part of its data
        self.peer_got = bytearray()
        self.order = []

    def teardown(self):
        if not hasattr(self, "loop"):
            return
        try:
            pending = self.reads + ([self.write] if self.write else [])
            for t in pending:
                t.cancel()
            spin(self.loop, 3)
            self.collect()
            assert not self.errors, self.errors
        finally:
            self.sock.close()
            self.peer.close()
            self.loop.close()
            gc.collect()

    def collect(self):
        for t in list(self.reads):
            if t.done():
                self.reads.remove(t)
                if not t.cancelled():
                    r = t.result()
                    self.received += r
        if self.write is not None and self.write.done():
            if self.write.cancelled():
                self.write_unknown = True
            else:
                self.write.result()
                self.written += self.write_data
            self.write = None

    def _read_task(self, coro):
        async def run():
            return await coro

        t = self.loop.create_task(run())
        self.reads.append(t)
        return t

    @precondition(lambda self: len(self.reads) < 3)
    @rule(n=st.sampled_from([1, 7, 4096, 65536, 300_000]))
    def start_recv(self, n):
        self._read_task(self.loop.sock_recv(self.sock, n))
        spin(self.loop, 2)
        self.collect()

    @precondition(lambda self: len(self.reads) < 3)
    @rule(n=st.sampled_from([1, 100, 70_000]), mutate=st.booleans())
    def start_recv_into(self, n, mutate):
        buf = bytearray(n)

        async def into():
            k = await self.loop.sock_recv_into(self.sock, buf)
            return bytes(buf[:k])

        self._read_task(into())
        if mutate:  # resized while parked (no view is held meanwhile)
            buf.extend(b"\0" * 10)
        spin(self.loop, 2)
        self.collect()

    @precondition(lambda self: self.write is None and not self.write_unknown)
    @rule(data=payloads, kind=st.sampled_from(["bytes", "bytearray", "memoryview"]))
    def start_sendall(self, data, kind):
        self.write_data = bytes(data)
        self.write = self.loop.create_task(self._sendall(as_kind(data, kind)))
        spin(self.loop, 2)
        self.collect()

    async def _sendall(self, obj):
        await self.loop.sock_sendall(self.sock, obj)

    @precondition(lambda self: self.reads)
    @rule(i=st.integers(0, 2))
    def cancel_a_read(self, i):
        self.reads[i % len(self.reads)].cancel()
        spin(self.loop, 2)
        self.collect()

    @precondition(lambda self: self.write is not None)
    @rule()
    def cancel_the_write(self):
        self.write.cancel()
        spin(self.loop, 2)
        self.collect()

    @rule(data=payloads)
    def peer_sends(self, data):
        try:
            n = self.peer.send(data)
        except BlockingIOError:
            n = 0
        self.sent_by_peer += data[:n]
        spin(self.loop, 3)
        self.collect()

    @rule()
    def peer_reads(self):
        drain(self.peer, self.peer_got)
        spin(self.loop, 3)
        self.collect()

    @rule(n=st.integers(1, 10))
    def run_loop(self, n):
        spin(self.loop, n)
        self.collect()

    @invariant()
    def streams_in_order(self):
        if not hasattr(self, "loop"):
            return
        assert self.sent_by_peer.startswith(self.received)
        if not self.write_unknown:
            assert self.peer_got.startswith(self.written) or self.written.startswith(
                self.peer_got)
            assert len(self.peer_got) <= len(self.written) + len(self.write_data)
            assert (self.written + self.write_data).startswith(self.peer_got)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_sock_machine(loop_name):
    machine = type(f"SockMachine_{loop_name}", (SockMachine,), {"loop_name": loop_name})
    run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)


# ---- a closed socket's fd number reused by a new socket ----------------------------------------
# The kernel hands out the lowest free fd, so a socket made right after another was closed gets
# its number. Nothing meant for (or parked on) the old socket may reach the new one.


def new_pair_on(fd: int):
    """A socketpair (b, c) where b has the number `fd` (lower free numbers are filled first)."""
    fillers = []
    try:
        for _ in range(64):
            b, c = socket.socketpair()
            if c.fileno() == fd:
                b, c = c, b
            if b.fileno() == fd:
                b.setblocking(False)
                c.setblocking(False)
                return b, c
            fillers += [b, c]
            if b.fileno() > fd and c.fileno() > fd:
                break
        pytest.skip("the kernel did not reuse the fd number")
    finally:
        for s in fillers:
            s.close()


def nothing_arrived(*socks) -> bool:
    for s in socks:
        try:
            if s.recv(1 << 16):
                return False
        except BlockingIOError:
            pass
    return True


@pytest.mark.parametrize(
    "loop_name",
    [
        "cicada",
        "asyncio",
    ],
)
def test_write_after_a_drained_close_never_reaches_a_reused_fd(loop_name):
    loop = LOOPS[loop_name]()
    a, peer = tcp_pair(sndbuf=4096)
    proto = Recorder()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    tr, _ = loop.run_until_complete(loop.create_connection(lambda: proto, sock=a))
    fd = a.fileno()
    tr.write(b"x" * 300_000)  # more than the socket takes: close() waits for it to drain
    tr.close()
    got = bytearray()
    assert wait_until(loop, lambda: bool(proto.lost), step=lambda: drain(peer, got))
    assert wait_until(loop, lambda: len(got) >= 300_000, step=lambda: drain(peer, got))
    assert got == b"x" * 300_000 and proto.lost == [None]
    b, c = new_pair_on(fd)
    try:
        try:
            tr.write(b"LEAKED")  # asyncio: AttributeError ('NoneType' has no 'send')
        except Exception:
            pass
        spin(loop)
        assert nothing_arrived(b, c)
    finally:
        for s in (b, c, peer):
            s.close()
        loop.close()


@pytest.mark.parametrize(
    "loop_name",
    [
        "cicada",
        "asyncio",
    ],
)
def test_socket_closed_under_a_transport_does_not_route_writes_elsewhere(loop_name):
    loop = LOOPS[loop_name]()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    a, peer = tcp_pair()
    proto = Recorder()
    tr, _ = loop.run_until_complete(loop.create_connection(lambda: proto, sock=a))
    fd = a.fileno()
    a.close()  # the caller still holds the socket it passed with sock=, and closes it
    b, c = new_pair_on(fd)
    try:
        try:
            tr.write(b"LEAKED")  # asyncio: EBADF, reported as connection_lost(OSError)
        except OSError:
            pass
        spin(loop)
        assert nothing_arrived(b, c)
    finally:
        tr.abort()
        spin(loop)
        for s in (b, c, peer):
            s.close()
        loop.close()


@pytest.mark.parametrize(
    "loop_name",
    [
        "cicada",
        "asyncio",
    ],
)
def test_stale_sock_recv_waiter_does_not_steal_from_a_reused_fd(loop_name):
    loop = LOOPS[loop_name]()

    async def main():
        a, a_peer = socket.socketpair()
        a.setblocking(False)
        stale = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        fd = a.fileno()
        a.close()  # a shutdown path closing the socket a reader task still waits on
        b, c = new_pair_on(fd)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        # the new owner of the number parks a write (its peer does not read yet)
        big = asyncio.ensure_future(loop.sock_sendall(b, b"y" * 2_000_000))
        await asyncio.sleep(0.01)
        c.send(b"REQUEST")
        await asyncio.sleep(0.05)
        try:
            assert not stale.done(), stale  # asyncio leaves it pending
            assert b.recv(100) == b"REQUEST"
        finally:
            for f in (big, stale):
                f.cancel()
            await asyncio.sleep(0)
            for s in (a_peer, b, c):
                s.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.mark.parametrize(
    "loop_name",
    [
        "cicada",
        "asyncio",
    ],
)
def test_stale_sock_sendall_waiter_does_not_write_into_a_reused_fd(loop_name):
    loop = LOOPS[loop_name]()

    async def main():
        a, a_peer = socket.socketpair()
        a.setblocking(False)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        stale = asyncio.ensure_future(loop.sock_sendall(a, b"SECRET" * 200_000))
        await asyncio.sleep(0.01)
        fd = a.fileno()
        a.close()
        a_peer.close()
        b, c = new_pair_on(fd)
        # the new owner of the number waits for a request (asyncio: ENOENT from epoll modify)
        r = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0.05)
        try:
            assert nothing_arrived(c)
        finally:
            for f in (r, stale):
                f.cancel()
            await asyncio.sleep(0)
            b.close()
            c.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


# ---- hostile StreamReader state, compared with asyncio ---------------------------------------


class Hostile:
    def __bool__(self):
        raise ZeroDivisionError("hostile __bool__")


class BadWaiter:
    """Stands in for reader._waiter: a future whose cancelled() raises."""

    def cancelled(self):
        raise ZeroDivisionError("hostile waiter")

    def done(self):
        return False


def _export_buffer(reader, keep):
    keep.append(memoryview(reader._buffer))  # held: the buffer can't grow any more


STREAM_MUTATIONS = {
    "buffer_is_bytes": lambda r, keep: setattr(r, "_buffer", b""),
    "buffer_is_exported": _export_buffer,
    "buffer_is_a_list": lambda r, keep: setattr(r, "_buffer", []),
    "waiter_cancelled_raises": lambda r, keep: setattr(r, "_waiter", BadWaiter()),
    "waiter_is_a_string": lambda r, keep: setattr(r, "_waiter", "nope"),
    "limit_is_a_string": lambda r, keep: setattr(r, "_limit", "abc"),
    "limit_is_a_float": lambda r, keep: setattr(r, "_limit", 1.5),
    "limit_is_huge": lambda r, keep: setattr(r, "_limit", 2**200),
    "limit_is_negative": lambda r, keep: setattr(r, "_limit", -(2**70)),
    "limit_deleted": lambda r, keep: delattr(r, "_limit"),
    "paused_bool_raises": lambda r, keep: setattr(r, "_paused", Hostile()),
    "transport_is_gone": lambda r, keep: setattr(r, "_transport", None),
    "transport_is_a_string": lambda r, keep: setattr(r, "_transport", "nope"),
    "eof_set_by_hand": lambda r, keep: setattr(r, "_eof", True),
    "eof_bool_raises": lambda r, keep: setattr(r, "_eof", Hostile()),
    "exception_set": lambda r, keep: r.set_exception(ZeroDivisionError("set by the app")),
}


def stream_outcome(loop_name: str, mutation: str, fast: bool):
    """What a StreamReader-based connection does with `mutation` applied and 3 sends of data:
    the exception handler calls, connection_lost, the buffer and the transport's state."""
    from cicada import _core

    was = _core._set_stream_fast_path(fast)
    loop = LOOPS[loop_name]()
    errors = []
    loop.set_exception_handler(
        lambda lp, ctx: errors.append((ctx.get("message"), type(ctx.get("exception")).__name__))
    )
    a, peer = tcp_pair()
    keep = []
    try:

        async def main():
            reader, writer = await asyncio.open_connection(sock=a, limit=64)
            STREAM_MUTATIONS[mutation](reader, keep)
            sent = []
            for chunk in (b"a" * 10, b"b" * 200, b"c" * 100_000):
                try:
                    sent.append(peer.send(chunk))
                except BlockingIOError:
                    sent.append(0)
                except OSError as e:  # the transport closed on a fatal error
                    sent.append(type(e).__name__)
                for _ in range(5):
                    await asyncio.sleep(0.002)
            buf = reader.__dict__.get("_buffer")
            state = {
                "buffer": bytes(buf[:400]) if isinstance(buf, (bytes, bytearray)) else repr(buf),
                "sent": sent,
                "closing": writer.transport.is_closing(),
                "reading": writer.transport.is_reading(),
                "exception": type(reader.exception()).__name__ if reader.exception() else None,
            }
            keep.clear()
            writer.transport.abort()
            await asyncio.sleep(0.01)
            return state

        state = loop.run_until_complete(main())
        state["errors"] = errors
        return state
    finally:
        keep.clear()
        _core._set_stream_fast_path(was)
        peer.close()
        loop.close()


@pytest.mark.parametrize("mutation", list(STREAM_MUTATIONS))
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "generic"])
def test_hostile_stream_reader_state_behaves_as_on_asyncio(mutation, fast):
    expected = stream_outcome("asyncio", mutation, fast)
    assert stream_outcome("cicada", mutation, fast) == expected


# ---- re-entrancy: cicada's loop can be run again from inside a protocol callback ------------


def test_transport_closed_by_a_nested_run_inside_resume_writing():
    loop = cicada.loop.new_event_loop()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    a, peer = tcp_pair(sndbuf=4096)
    got = bytearray()

    class Nester(Recorder):
        def resume_writing(self):
            super().resume_writing()

            async def close_and_wait():
                self.transport.close()
                while not self.lost:
                    drain(peer, got)
                    await asyncio.sleep(0.001)

            loop.run_until_complete(close_and_wait())  # nested: cicada's loop is re-entrant

    proto = Nester()
    try:
        tr, _ = loop.run_until_complete(loop.create_connection(lambda: proto, sock=a))
        tr.write(b"w" * 1_000_000)
        assert proto.paused_writing == 1
        assert wait_until(loop, lambda: bool(proto.lost), step=lambda: drain(peer, got))
        spin(loop)
        assert proto.lost == [None]
        assert wait_until(loop, lambda: len(got) >= 1_000_000, step=lambda: drain(peer, got))
        assert got == b"w" * 1_000_000
        assert not errors, [(c["message"], c.get("exception")) for c in errors]
    finally:
        peer.close()
        loop.close()



# ---- single cases the machines reach rarely ------------------------------------------------


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_writelines_past_iov_max_with_a_slow_reader(loop_name):
    """More items than one sendmsg() takes (IOV_MAX 1024), of every buffer type, mutated right
    after the call: the peer gets exactly the original bytes, in order."""
    if ZERO_COPY_WRITES.get(loop_name):
        pytest.skip("asyncio 3.12+ sends writelines() items without copying them: they must "
                    "not be changed after the call")
    loop = LOOPS[loop_name]()
    a, peer = tcp_pair(sndbuf=4096)
    proto = Recorder()
    try:
        tr, _ = loop.run_until_complete(loop.create_connection(lambda: proto, sock=a))
        items, expected = [], bytearray()
        for i in range(3000):
            data = bytes([i % 256]) * (i % 7)  # empty items too
            items.append(as_kind(data, ["bytes", "bytearray", "memoryview", "slice"][i % 4]))
            expected += data
        tr.writelines(items)
        tr.writelines(iter([b"tail-", memoryview(b"end")]))  # any iterable
        expected += b"tail-end"
        for o in items:
            spoil(o)
        got = bytearray()
        assert wait_until(loop, lambda: len(got) >= len(expected),
                          step=lambda: drain(peer, got))
        assert got == expected
        with pytest.raises(TypeError):
            tr.writelines([b"ok", "not bytes"])
        with pytest.raises(TypeError):
            tr.writelines(5)
        tr.close()
        assert wait_until(loop, lambda: bool(proto.lost), step=lambda: drain(peer, got))
        assert proto.lost == [None]
    finally:
        peer.close()
        loop.close()


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_sock_accept_cancelled_and_listener_closed(loop_name):
    loop = LOOPS[loop_name]()

    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        lsock.setblocking(False)
        # cancelled while parked: a later connection is still there for the next accept
        t = asyncio.ensure_future(loop.sock_accept(lsock))
        await asyncio.sleep(0.01)
        t.cancel()
        await asyncio.sleep(0)
        c = socket.create_connection(lsock.getsockname())
        conn, _ = await asyncio.wait_for(loop.sock_accept(lsock), 5)
        assert conn.getblocking() is False
        conn.close()
        c.close()
        # parked, then the listener is closed and removed: no crash, no stray result
        t = asyncio.ensure_future(loop.sock_accept(lsock))
        await asyncio.sleep(0.01)
        loop.remove_reader(lsock)
        lsock.close()
        await asyncio.sleep(0.01)
        assert not t.done()
        t.cancel()
        await asyncio.sleep(0)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


class Switcher(asyncio.Protocol):
    """Swaps itself for a BufferedProtocol (and that one back) from inside its callbacks."""

    def __init__(self, log, other=None):
        self.log = log
        self.other = other

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.log.append(("plain", bytes(data)))
        nxt = BufferSwitcher(self.log, self)
        nxt.transport = self.transport
        self.transport.set_protocol(nxt)

    def connection_lost(self, exc):
        self.log.append(("lost", type(exc).__name__))


class BufferSwitcher(asyncio.BufferedProtocol):
    def __init__(self, log, back):
        self.log = log
        self.back = back
        self.buf = bytearray(5)

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.log.append(("buffered", bytes(self.buf[:nbytes])))
        self.transport.set_protocol(self.back)

    def connection_lost(self, exc):
        self.log.append(("lost", type(exc).__name__))


GET_BUFFER_RESULTS = {
    "read_only": lambda: b"12345",
    "empty": lambda: bytearray(),
    "not_a_buffer": lambda: 42,
    "memoryview_slice": lambda: memoryview(bytearray(10))[2:7],
    "released_view": lambda: _released(),
}


def _released():
    m = memoryview(bytearray(8))
    m.release()
    return m


def switch_outcome(loop_name):
    loop = LOOPS[loop_name]()
    log = []
    a, peer = tcp_pair()
    try:
        loop.run_until_complete(loop.create_connection(lambda: Switcher(log), sock=a))
        for i in range(6):
            peer.send(b"%d" % i * 3)  # "000", "111", ...: one read each
            spin(loop, 5)
            assert wait_until(loop, lambda: len(log) > i)
        peer.close()
        assert wait_until(loop, lambda: log[-1][0] == "lost")
        return log
    finally:
        loop.close()


def test_protocol_swapped_between_plain_and_buffered_inside_callbacks():
    assert switch_outcome("cicada") == switch_outcome("asyncio")


def get_buffer_outcome(loop_name, kind):
    loop = LOOPS[loop_name]()
    errors = []
    loop.set_exception_handler(
        lambda lp, ctx: errors.append((ctx["message"], type(ctx.get("exception")).__name__)))
    a, peer = tcp_pair()

    class P(BufferedRecorder):
        def get_buffer(self, sizehint):
            self.buf = GET_BUFFER_RESULTS[kind]()
            return self.buf

        def buffer_updated(self, nbytes):
            self.data += bytes(self.buf[:nbytes])

    proto = P([1])
    try:
        loop.run_until_complete(loop.create_connection(lambda: proto, sock=a))
        peer.send(b"abcdefgh")
        wait_until(loop, lambda: bool(proto.lost) or len(proto.data) >= 8, timeout=2)
        return bytes(proto.data), [type(e).__name__ for e in proto.lost], errors
    finally:
        peer.close()
        loop.close()


@pytest.mark.parametrize("kind", [
    *GET_BUFFER_RESULTS,
])
def test_get_buffer_returning_unusable_buffers(kind):
    assert get_buffer_outcome("cicada", kind) == get_buffer_outcome("asyncio", kind)


PENDING_READ_MANGLES = {
    "replaced": lambda r: setattr(r, "_buffer", bytearray(b"XY")),
    "cleared": lambda r: r._buffer.clear(),
    "subclassed": lambda r: setattr(r, "_buffer", Bytearray2(r._buffer)),
    "limit_lowered": lambda r: setattr(r, "_limit", 1),
    "waiter_cancelled": lambda r: r._waiter.cancel(),
}


def pending_read_outcome(loop_name, mangle, fast):
    from cicada import _core

    was = _core._set_stream_fast_path(fast)
    loop = LOOPS[loop_name]()
    a, peer = tcp_pair()
    try:

        async def main():
            reader, writer = await asyncio.open_connection(sock=a, limit=16)
            t = asyncio.ensure_future(reader.readexactly(12))
            peer.send(b"abcde")
            for _ in range(5):
                await asyncio.sleep(0.002)
            PENDING_READ_MANGLES[mangle](reader)
            peer.send(b"fghijklmnop")
            for _ in range(5):
                await asyncio.sleep(0.002)
            peer.shutdown(socket.SHUT_WR)
            try:
                got = await asyncio.wait_for(t, 2)
            except (asyncio.IncompleteReadError, asyncio.CancelledError) as e:
                got = type(e).__name__
            rest = await asyncio.wait_for(reader.read(), 2)
            writer.close()
            return got, rest

        return loop.run_until_complete(main())
    finally:
        _core._set_stream_fast_path(was)
        peer.close()
        loop.close()


@pytest.mark.parametrize("mangle", list(PENDING_READ_MANGLES))
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "generic"])
def test_reader_state_mangled_under_a_pending_read(mangle, fast):
    assert pending_read_outcome("cicada", mangle, fast) == pending_read_outcome(
        "asyncio", mangle, fast)
