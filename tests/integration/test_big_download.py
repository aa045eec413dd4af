"""A 1 GiB streamed download keeps the server's memory flat (flow control, no buffering)."""

from __future__ import annotations

import os
import time

import httpx
import pytest
from support.memory import rss_kb

GIB = 1 << 30
ALLOWED_GROWTH = 24 * 1024 * 1024  # bytes of RSS the server may gain over the whole transfer


def rss(pid: int) -> int:
    return rss_kb(pid) * 1024


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="ASan's quarantine keeps freed memory resident: RSS is not meaningful")
def test_one_gib_download_flat_rss(serve):
    p = serve("testapps:app", "--port", "0", "--no-access-log")
    port = p.wait_port()
    url = f"http://127.0.0.1:{port}/download"
    with httpx.Client(timeout=60) as c:
        # Warm up: allocators, buffers and code paths reach their steady state first.
        assert len(c.get(url, params={"n": 32 << 20, "chunk": 1 << 16}).content) == 32 << 20
        before = rss(p.proc.pid)
        peak = before
        received = 0
        next_sample = 0
        t0 = time.monotonic()
        with c.stream("GET", url, params={"n": GIB, "chunk": 1 << 16}) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw(1 << 20):
                received += len(chunk)
                if received >= next_sample:
                    peak = max(peak, rss(p.proc.pid))
                    next_sample += 64 << 20
        elapsed = time.monotonic() - t0
        after = rss(p.proc.pid)
    assert received == GIB
    assert peak - before < ALLOWED_GROWTH, (before, peak, after)
    assert after - before < ALLOWED_GROWTH, (before, peak, after)
    print(f"1 GiB in {elapsed:.1f}s; server RSS before {before >> 20} MiB, peak {peak >> 20} MiB, after {after >> 20} MiB")
