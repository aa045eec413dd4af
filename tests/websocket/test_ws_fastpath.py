"""A WebSocket shares its connection's HttpProtocol, so on cicada's loop its frames go through the
C transport fast path too (loop/loop.h), and on other loops through the generic Python calls."""

from __future__ import annotations

import cicada._core as core
import wsraw
from ws_apps import echo

BIG = b"z" * 300_000  # larger than what the socket takes at once: buffered, then flushed


def _fast_counts():
    c = core._loop_counters()
    return c["fast_reads"], c["fast_writes"]


def test_ws_echo_fast_path_only_on_cicada_loop(serve, loop_kind):
    before = _fast_counts()
    st = serve(echo)
    s, status, _, rest = wsraw.handshake(st.port)
    assert status == 101
    r = wsraw.Reader(s, rest)
    for payload in (b"hi", BIG, b"there"):
        s.sendall(wsraw.frame(0x2, payload))
        assert r.read() == (True, 0x2, payload)
    s.sendall(wsraw.frame(0x8, wsraw.close_payload(1000)))
    assert r.read_close() == (1000, b"")
    s.close()
    reads, writes = (a - b for a, b in zip(_fast_counts(), before))
    if loop_kind == "cicada":
        assert reads >= 4 and writes >= 4  # handshake + 3 frames + close, each way
    else:
        assert (reads, writes) == (0, 0)
