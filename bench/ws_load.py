"""WebSocket load client for bench/suites/websocket.py (run pinned to core 1 by the suite).

Raw asyncio protocol, no library: frames are pre-built (masked once), replies are counted by
byte length, so the client spends almost nothing per message and the server is what is measured.

    python bench/ws_load.py echo|broadcast PORT SIZE CONNECTIONS WINDOW SECONDS
Prints one JSON line: {"msgs": N, "seconds": S, "rate": N/S}.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import sys
import time


def masked_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x82, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x82, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x82, 0x80 | 127, n)
    key = os.urandom(4)
    k = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big") if n else b""
    return hdr + key + masked


def reply_len(n: int) -> int:
    return n + (2 if n < 126 else 4 if n < 65536 else 10)


class Conn(asyncio.Protocol):
    def __init__(self, path: str, frame: bytes, rlen: int, window: int, sender: bool, state: dict):
        self.path, self.frame, self.rlen, self.window = path, frame, rlen, window
        self.sender, self.state = sender, state
        self.head = b""
        self.open = asyncio.get_running_loop().create_future()
        self.got = 0  # reply bytes since the last window was sent
        self.msgs = 0

    def connection_made(self, transport):
        self.t = transport
        key = base64.b64encode(os.urandom(16))
        transport.write(b"GET " + self.path.encode() + b" HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")

    def data_received(self, data):
        if not self.open.done():
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, _, data = self.head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                self.open.set_exception(RuntimeError(head[:200]))
                return
            self.open.set_result(None)
        self.got += len(data)
        done = self.got // self.rlen
        if done:
            self.msgs += done
            self.got -= done * self.rlen
            self.state["msgs"] += done
            if self.sender and self.state["running"]:
                self.pending -= done
                if self.pending <= 0:
                    self.send_window()

    def send_window(self):
        self.pending = self.window
        self.t.write(self.frame * self.window)


async def main() -> None:
    mode, port, size, conns, window, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    loop = asyncio.get_running_loop()
    frame = masked_frame(os.urandom(size))
    state = {"msgs": 0, "running": True}
    path = "/echo" if mode == "echo" else "/broadcast"
    cs = []
    for i in range(conns):
        sender = mode == "echo" or i == 0
        _, c = await loop.create_connection(
            lambda: Conn(path, frame, reply_len(size), window, sender, state), "127.0.0.1", port)
        await c.open
        cs.append(c)
    await asyncio.sleep(0.2)  # broadcast: every member registered
    for c in cs:
        if c.sender:
            c.send_window()
    await asyncio.sleep(min(1.0, seconds / 4))  # warm-up
    start_msgs, t0 = state["msgs"], time.perf_counter()
    await asyncio.sleep(seconds)
    msgs, dt = state["msgs"] - start_msgs, time.perf_counter() - t0
    state["running"] = False
    for c in cs:
        c.t.abort()
    print(json.dumps({"msgs": msgs, "seconds": dt, "rate": msgs / dt}))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
