"""Long runs keep memory flat: WebSocket connections that end every way (client close, vanish,
protocol error, app close, 403) leave no objects or zlib state behind."""

from __future__ import annotations

import gc
import os
import zlib

import pytest

from support.memory import rss_kb
from ws_apps import quiet_echo
from wsraw import Reader, close_payload, frame, handshake

UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")



def deflated(data: bytes) -> bytes:
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (co.compress(data) + co.flush(zlib.Z_SYNC_FLUSH))[:-4]


def _batch(st, n):
    for i in range(n):
        kind = i % 5
        extra = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if i % 2 else b""
        s, status, _, rest = handshake(st.port, f"/m{kind}", extra=extra)
        assert status == 101
        r = Reader(s, rest)
        s.sendall(frame(0x1, b"hello " * 20) + frame(0x2, b"\x00" * 3000, fin=False) +
                  frame(0x9, b"p") + frame(0x0, b"\x01" * 10))
        if extra:
            s.sendall(frame(0x1, deflated(b"zip " * 500), rsv=4))
        r.read(), r.read(), r.read()
        if kind == 0:
            s.sendall(frame(0x8, close_payload(1000, b"bye")))
            r.read_close()
        elif kind == 1:
            pass  # vanish
        elif kind == 2:
            s.sendall(frame(0x1, b"\xff"))
            r.read_close()
        elif kind == 3:
            s.sendall(frame(0x1, b"x" * 10, fin=False))  # vanish mid-message
        else:
            s.sendall(frame(0x7, b""))
            r.read_close()
        s.close()


def _settle(st):
    import time

    end = time.monotonic() + 5
    while (st.server.connection_count or st.server.active_requests) and time.monotonic() < end:
        time.sleep(0.01)
    gc.collect()


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine keeps freed memory resident")
def test_rss_flat_over_many_websockets(serve):
    st = serve(quiet_echo, error_logger=None)  # the test log handler keeps every record
    _batch(st, 300)
    _settle(st)
    before = rss_kb()
    _batch(st, 1500)
    _settle(st)
    after = rss_kb()
    # A leaked inflater/deflater alone would be >= 30 KB each: 750 of them would be 20+ MB.
    assert after - before < 2048, (before, after)
    assert st.server.connection_count == 0 and st.server.active_requests == 0


@pytest.mark.skipif(UNDER_ASAN, reason="LeakSanitizer checks leaks under ASan; tracemalloc's own "
                    "tracebacks allocated by the server thread while stop() runs show up as leaks")
def test_python_objects_flat(serve):
    import tracemalloc

    st = serve(quiet_echo, error_logger=None)  # the test log handler keeps every record
    _batch(st, 200)
    _settle(st)
    tracemalloc.start()
    try:
        _batch(st, 100)
        _settle(st)
        base = tracemalloc.get_traced_memory()[0]
        _batch(st, 500)
        _settle(st)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown
