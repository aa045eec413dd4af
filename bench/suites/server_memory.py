"""Server memory: does RSS stay flat across one million requests, and what does one idle
keep-alive connection cost (10,000 of them)? cicada (the CLI) vs uvicorn, plus granian and
hypercorn for the idle connections.

Same raw ASGI app and same command lines as bench/suites/server.py, server pinned to core 0.
RSS is VmRSS summed over the server's process group (the CLI does not fork with one worker;
granian's worker is a child process, so the sum is what it costs).
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import time

import harness
from suites import server as srv

TITLE = "Server memory: RSS across 1,000,000 requests and per idle keep-alive connection"

# BENCH_RSS_REQUESTS / BENCH_IDLE_CONNS only shrink a quick check of the suite itself; the
# report states the figures actually used.
REQUESTS = int(os.environ.get("BENCH_RSS_REQUESTS", 1_000_000))
IDLE_CONNS = int(os.environ.get("BENCH_IDLE_CONNS", 10_000))
FLAT_SUBJECTS = [srv.CICADA_LOOP, srv.UVICORN]
IDLE_SUBJECTS = [srv.CICADA_LOOP, srv.CICADA, srv.UVICORN, srv.GRANIAN, srv.HYPERCORN]
APP = srv.APPS["raw"]
IDLE_KEEP_ALIVE = 600  # s: longer than the measurement, so no server drops the idle connections
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

FLAT_ROW = f"RSS growth over {REQUESTS:,} plaintext requests"
IDLE_ROW = f"RSS per idle keep-alive connection ({IDLE_CONNS:,})"

NOTES = (
    f"`{FLAT_ROW}`: the server is warmed up with 3 s of wrk -c64, its RSS is read, then wrk -c64 "
    f"runs in chunks of at most 10 s (each chunk opens fresh connections) until {REQUESTS:,} "
    "responses have been counted; the cell is end − start, with start → end and the peak seen "
    "between chunks. "
    f"`{IDLE_ROW}`: after 200 warm-up connections (opened, used, closed), {IDLE_CONNS:,} "
    "connections are opened from the suite's process, each sends one GET and reads the answer, "
    "then stays idle; the cell is (RSS after − RSS before) / connections, median over runs, "
    "each run on a fresh server. Idle timeouts are raised (cicada/uvicorn --timeout-keep-alive "
    f"{IDLE_KEEP_ALIVE}, hypercorn --keep-alive {IDLE_KEEP_ALIVE}, granian "
    "--http1-header-read-timeout 60000: its maximum; granian also gets --backpressure "
    f"{IDLE_CONNS + 1000:,}, as its default stops accepting at 1,024 open connections) and the "
    "cell says how many connections were still open when RSS was read."
)


def raise_nofile(want: int) -> int:
    """Lift RLIMIT_NOFILE for this process and the servers it starts (they inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want and os.geteuid() == 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _close_all(socks) -> None:
    for s in socks:
        # RST instead of FIN: no TIME_WAIT pile-up on loopback ports between runs.
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def open_keepalive(port: int, n: int, batch: int = 250, timeout: float | None = None) -> list:
    """n connections to port, each having sent one GET and read the whole plaintext answer;
    they stay open. Batches keep the pending handshakes within every server's backlog."""
    socks: list[socket.socket] = []
    timeout = timeout or 20 + n / 250  # generous: a loaded machine opens ~1,000/s at worst
    deadline = time.monotonic() + timeout
    try:
        for first in range(0, n, batch):
            pending: dict[socket.socket, bytes] = {}
            with selectors.DefaultSelector() as sel:
                for _ in range(min(batch, n - first)):
                    s = socket.socket()
                    socks.append(s)
                    s.setblocking(False)
                    s.connect_ex(("127.0.0.1", port))
                    sel.register(s, selectors.EVENT_WRITE)
                    pending[s] = b""
                while pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RuntimeError(f"{len(pending)} connections unanswered after "
                                           f"{timeout:.0f} s ({len(socks) - len(pending)} done)")
                    for key, events in sel.select(timeout=left):
                        s = key.fileobj
                        if events & selectors.EVENT_WRITE:
                            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            if err:
                                raise RuntimeError(f"connect: {os.strerror(err)}")
                            s.send(REQUEST)  # a few bytes into an empty buffer: never partial
                            sel.modify(s, selectors.EVENT_READ)
                            continue
                        data = s.recv(4096)
                        if not data:
                            raise RuntimeError("server closed a connection before answering")
                        pending[s] += data
                        if pending[s].endswith(b"Hello, World!"):
                            sel.unregister(s)
                            del pending[s]
    except BaseException:
        _close_all(socks)
        raise
    return socks


def still_open(socks) -> int:
    """How many of socks are neither closed nor carrying unexpected data (idle and open)."""
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN | select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return len(socks) - len(poller.poll(0))


def idle_connection_kb(subject: str) -> tuple[float, str]:
    """One run on a fresh server: KB of server RSS per idle keep-alive connection, and a note."""
    port = harness.free_port()
    cmd = srv.server_cmd(subject, APP, port, keep_alive=IDLE_KEEP_ALIVE,
                         connections=IDLE_CONNS + 1000)
    with harness.server_process(cmd, port, env={"PYTHONPATH": str(srv.APPDIR)},
                                cwd=srv.APPDIR) as proc:
        _close_all(open_keepalive(port, 200))  # lazy imports, first buffers, freelists
        time.sleep(0.5)
        before = harness.group_rss_kb(proc.pid)
        t0 = time.monotonic()
        socks = open_keepalive(port, IDLE_CONNS)
        print(f"{subject}: {IDLE_CONNS:,} keep-alive connections open in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        try:
            time.sleep(1.0)
            after = harness.group_rss_kb(proc.pid)
            alive = still_open(socks)
        finally:
            _close_all(socks)
    note = (f"{alive:,} of {IDLE_CONNS:,} open; RSS {before / 1024:.1f} → {after / 1024:.1f} MB")
    return (after - before) / IDLE_CONNS, note


def rss_across_requests(subject: str) -> tuple[float, float, str]:
    """RSS growth (MB) of a warmed-up server across REQUESTS plaintext requests: at the end, at
    the peak seen between wrk chunks, and a note."""
    port = harness.free_port()
    cmd = srv.server_cmd(subject, APP, port)
    url = f"http://127.0.0.1:{port}/"
    with harness.server_process(cmd, port, env={"PYTHONPATH": str(srv.APPDIR)},
                                cwd=srv.APPDIR) as proc:
        warm = harness.wrk(url, duration=3)
        start = harness.group_rss_kb(proc.pid)
        peak, served, rps = start, 0, max(warm["rps"], 1.0)
        while served < REQUESTS:
            chunk = min(10, max(1, round((REQUESTS - served) / rps)))
            r = harness.wrk(url, duration=chunk)
            if r["errors"]:
                print(f"{subject}: {r['errors']} wrk errors", file=sys.stderr)
            if r["requests"] <= 0:
                raise RuntimeError("wrk counted no responses")
            served += r["requests"]
            rps = max(r["rps"], 1.0)
            peak = max(peak, harness.group_rss_kb(proc.pid))
        end = harness.group_rss_kb(proc.pid)
    note = (f"{start / 1024:.1f} → {end / 1024:.1f} MB, peak {peak / 1024:.1f} MB, "
            f"{served:,} requests")
    return (end - start) / 1024, (peak - start) / 1024, note


def collect(opts) -> list[harness.Result]:
    results = []
    limit = raise_nofile(65536)
    runs = max(1, min(opts.runs, 3))  # each idle run restarts the server; 3 is plenty
    for subject in IDLE_SUBJECTS:
        if limit < IDLE_CONNS + 100:
            print(f"idle connections: skipped (RLIMIT_NOFILE {limit} < {IDLE_CONNS + 100}; "
                  "run as root or raise the hard limit)", file=sys.stderr)
            break
        values, notes = [], []
        for _ in range(runs):
            try:
                kb, note = idle_connection_kb(subject)
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                print(f"{subject} / idle connections: skipped ({exc})", file=sys.stderr,
                      flush=True)
                break
            values.append(kb)
            notes.append(note)
        if values:
            mid = statistics.median(values)
            results.append(harness.Result(IDLE_ROW, subject, mid, "KB/conn", values, False,
                                          {"note": notes[values.index(min(
                                              values, key=lambda v: abs(v - mid)))]}))
    for subject in FLAT_SUBJECTS:
        try:
            mb, peak_mb, note = rss_across_requests(subject)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            print(f"{subject} / RSS across requests: skipped ({exc})", file=sys.stderr,
                  flush=True)
            continue
        results.append(harness.Result(FLAT_ROW, subject, mb, "MB", [mb], False,
                                      {"note": note, "peak_growth_mb": peak_mb}))
    return results


def summary(results: list[harness.Result]) -> str:
    by = {(r.scenario, r.subject): r for r in results}
    lines = ["Targets from the issue:"]
    for subject in FLAT_SUBJECTS:
        r = by.get((FLAT_ROW, subject))
        if r:
            worst = max(abs(r.value), r.extra["peak_growth_mb"])
            verdict = "met" if worst <= 5.0 else "missed"
            lines.append(f"- {subject}: RSS flat within 5 MB across {REQUESTS:,} requests: "
                         f"{r.value:+.1f} MB at the end, {r.extra['peak_growth_mb']:+.1f} MB at "
                         f"the peak — {verdict}")
    me, peer = by.get((IDLE_ROW, srv.CICADA)), by.get((IDLE_ROW, srv.UVICORN))
    if me:
        vs = f" (uvicorn {peer.value:.1f} KB, ratio {me.value / peer.value:.2f}x)" if peer and \
            peer.value > 0 else ""
        lines.append(f"- memory per idle keep-alive connection reported: cicada "
                     f"{me.value:.1f} KB{vs}")
    lines.append("")
    lines.append(f"The 1M-request row is one run; the idle row is the median of the runs "
                 f"(up to 3). Load average when written: {os.getloadavg()[0]:.2f}.")
    return "\n".join(lines)
