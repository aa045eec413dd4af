"""Long runs keep the server's memory flat: no per-request or per-connection leaks."""

from __future__ import annotations

import gc
import os
import socket

import pytest
from apps import echo
from support.memory import rss_kb
from support.server_thread import read_response



def _batch(st, n, new_connection_every):
    s = None
    for i in range(n):
        if s is None or i % new_connection_every == 0:
            if s is not None:
                s.close()
            s = st.connect()
        if i % 3 == 0:
            s.sendall(b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\n0\r\n\r\n")
        else:
            s.sendall(b"GET /m?i=1 HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n")
        assert read_response(s)[0] == 200
    s.close()


UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine keeps freed memory resident; "
                    "test_python_objects_flat covers leaks under ASan")
def test_rss_flat_over_20k_requests(serve):
    st = serve(echo)
    _batch(st, 3000, 50)  # warm-up: allocator pools, freelists, caches
    gc.collect()
    before = rss_kb()
    _batch(st, 20000, 50)
    gc.collect()
    after = rss_kb()
    # A leak of even one small object per request would be >= 20000 * 64 B = 1.2 MiB.
    assert after - before < 1024, (before, after)
    assert st.server.connection_count <= 1


def test_python_objects_flat(serve):
    """tracemalloc sees every Python object the server makes: none may survive the requests."""
    import tracemalloc

    st = serve(echo)
    _batch(st, 2000, 50)
    gc.collect()
    tracemalloc.start()
    try:
        _batch(st, 1000, 50)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        _batch(st, 5000, 50)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown  # 5000 requests: < 13 bytes each


@pytest.mark.skipif(UNDER_ASAN, reason="RSS is not meaningful under ASan")
def test_idle_connection_memory(serve):
    """Many idle keep-alive connections: report the per-connection cost, keep it small."""
    st = serve(echo)
    socks = []
    gc.collect()
    before = rss_kb()
    for _ in range(500):
        s = st.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        read_response(s)
        socks.append(s)
    gc.collect()
    after = rss_kb()
    per_conn = (after - before) * 1024 / len(socks)
    print(f"\nRSS per idle keep-alive connection (both ends in-process): {per_conn:.0f} bytes")
    assert per_conn < 16384
    for s in socks:
        s.close()
