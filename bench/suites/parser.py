"""Request-parser throughput, in process: cicada's C parser vs httptools (llhttp) vs h11.

Each subject is driven from Python the way a server drives it: a loop feeds the same bytes object
and collects, per request, method, target, HTTP version, the header list with lowercased names,
keep-alive and the body. httptools gets a callback object like uvicorn's (names lowercased in
on_header); h11 gets receive_data/next_event until NEED_DATA, answering each request with an empty
response and start_next_cycle, which h11 requires before it reads the next pipelined request.
"""

from __future__ import annotations

import os
import statistics
import time

import harness

TITLE = "HTTP/1.1 request parser throughput (in process, driven from Python)"
NOTES = ""

SHORT_GET = b"GET / HTTP/1.1\r\nHost: localhost:8000\r\n\r\n"

BROWSER_GET = (
    b"GET /static/app.js?v=3f2a9c HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://www.example.com/products/list?page=2\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; _ga=GA1.2.1234567890.1700000000\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"Sec-Fetch-Dest: document\r\n"
    b"Sec-Fetch-Mode: navigate\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-User: ?1\r\n"
    b"Cache-Control: max-age=0\r\n"
    b"If-None-Match: W/\"5e15153d-120f\"\r\n"
    b"\r\n"
)

POST_BODY = b'{"name": "widget", "qty": 3}'
POST_SMALL = (
    b"POST /api/items HTTP/1.1\r\n"
    b"Host: api.example.com\r\n"
    b"Content-Type: application/json\r\n"
    b"Accept: application/json\r\n"
    b"User-Agent: python-httpx/0.27.0\r\n"
    b"Content-Length: " + str(len(POST_BODY)).encode() + b"\r\n\r\n" + POST_BODY
)

PIPELINED = (SHORT_GET + POST_SMALL + BROWSER_GET + SHORT_GET + POST_SMALL) * 2

SCENARIOS = [
    ("short GET", SHORT_GET, 1),
    ("browser GET (15 headers)", BROWSER_GET, 1),
    ("POST small body", POST_SMALL, 1),
    ("pipelined x10", PIPELINED, 10),
]


# ---------------------------------------------------------------------------------- drivers
# Each make_* returns run(n) that parses the scenario's bytes n times and returns the list of
# requests from the last pass, as (method, target, version, headers, keep_alive, body).


def make_cicada(data: bytes):
    from cicada._core import parse_request

    def run(n: int):
        size = len(data)
        out = []
        for _ in range(n):
            out = []
            off = 0
            while off < size:
                r = parse_request(data, off)
                off += r.head_len
                body = b""
                if r.body == "length":
                    body = data[off : off + r.content_length]
                    off += r.content_length
                out.append((r.method, r.target, r.http_version, r.headers, r.keep_alive, body))
        return out

    return run


def make_httptools(data: bytes):
    import httptools

    class Proto:
        __slots__ = ("parser", "url", "headers", "body", "out")

        def __init__(self):
            self.out = []
            self.parser = httptools.HttpRequestParser(self)

        def on_message_begin(self):
            self.url = b""
            self.headers = []
            self.body = []

        def on_url(self, url):
            self.url += url

        def on_header(self, name, value):
            self.headers.append((name.lower(), value))

        def on_body(self, body):
            self.body.append(body)

        def on_message_complete(self):
            p = self.parser
            self.out.append((p.get_method(), self.url, p.get_http_version(), self.headers,
                             p.should_keep_alive(), b"".join(self.body)))

    proto = Proto()

    def run(n: int):
        feed = proto.parser.feed_data
        for _ in range(n):
            proto.out = []
            feed(data)
        return proto.out

    return run


def make_h11(data: bytes):
    import h11

    conn = h11.Connection(h11.SERVER)
    response = h11.Response(status_code=200, headers=[(b"content-length", b"0")])
    eom = h11.EndOfMessage()
    need_data = h11.NEED_DATA
    Request, Data, EndOfMessage = h11.Request, h11.Data, h11.EndOfMessage

    def run(n: int):
        out = []
        for _ in range(n):
            out = []
            conn.receive_data(data)
            cur = None
            while True:
                ev = conn.next_event()
                if ev is need_data:
                    break
                t = type(ev)
                if t is Request:
                    cur = [ev.method, ev.target, ev.http_version, ev.headers, None, []]
                elif t is Data:
                    cur[5].append(ev.data)
                elif t is EndOfMessage:
                    cur[4] = conn.their_state is not h11.MUST_CLOSE
                    cur[5] = b"".join(cur[5])
                    out.append(tuple(cur))
                    conn.send(response)
                    conn.send(eom)
                    conn.start_next_cycle()
        return out

    return run


SUBJECTS = [("cicada", make_cicada), ("httptools", make_httptools), ("h11", make_h11)]


def _normalise(reqs):
    """The fields every subject must agree on, in one comparable shape."""
    out = []
    for method, target, version, headers, _keep_alive, body in reqs:
        version = version.decode() if isinstance(version, bytes) else version
        out.append((bytes(method), bytes(target), version,
                    [(bytes(n).lower(), bytes(v)) for n, v in headers], bytes(body)))
    return out


def _rate(run, per_pass: int, seconds: float) -> float:
    n = 50
    while True:  # calibrate to roughly `seconds` per measurement
        t0 = time.perf_counter()
        run(n)
        dt = time.perf_counter() - t0
        if dt >= seconds / 4:
            break
        n *= 4
    n = max(1, int(n * seconds / dt))
    t0 = time.perf_counter()
    run(n)
    return n * per_pass / (time.perf_counter() - t0)


def collect(opts) -> list[harness.Result]:
    global NOTES
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {int(harness.SERVER_CPU)})
    seconds = max(0.2, min(1.0, getattr(opts, "duration", 5.0) / 5))
    results: list[harness.Result] = []
    ratios = []
    for scenario, data, per_pass in SCENARIOS:
        runners = {name: make(data) for name, make in SUBJECTS}
        # Every subject must produce the same requests, or the comparison means nothing.
        ref = _normalise(runners["cicada"](1))
        assert len(ref) == per_pass, (scenario, len(ref))
        for name, run in runners.items():
            got = _normalise(run(1))
            assert got == ref, f"{name} parsed {scenario!r} differently"
        # Runs are interleaved (a, b, c, a, b, c, ...) so that load from elsewhere on the machine
        # hits every subject alike instead of skewing one subject's whole series.
        values = {name: [] for name in runners}
        for _ in range(opts.runs):
            for name, run in runners.items():
                values[name].append(_rate(run, per_pass, seconds))
        by = {}
        for name, vals in values.items():
            med = statistics.median(vals)
            by[name] = med
            results.append(harness.Result(scenario, name, med, "req/s", vals))
            print(f"  {scenario:28s} {name:10s} {med:12,.0f} req/s", flush=True)
        ratios.append(f"{scenario}: {by['cicada'] / by['httptools']:.2f}x httptools, "
                      f"{by['cicada'] / by['h11']:.1f}x h11")
    NOTES = ("cicada vs the others (median req/s ratio): " + "; ".join(ratios) + ".\n\n"
             "In-process microbenchmark on one pinned core; every subject returns the same fields "
             "(checked before timing).")
    return results
