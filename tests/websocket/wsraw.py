"""A raw-socket WebSocket client for protocol tests: exact control over every frame byte, so a
test can send what a well-behaved library never would (unmasked frames, bad UTF-8, bad codes)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct

from support.server_thread import wait_for  # noqa: F401  (the websocket tests import it from here)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def handshake(port: int, path: str = "/", extra: bytes = b"", timeout: float = 5.0,
              early: bytes = b""):
    """Connect and upgrade; returns (socket, status, head bytes, leftover bytes). `early`: bytes
    sent right after the request, in the same write, before the 101 arrives (frames, say)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
              b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n" + early)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else 0
    if status == 101:
        want = base64.b64encode(hashlib.sha1(key + GUID).digest())
        assert b"sec-websocket-accept: " + want in head.lower().replace(want.lower(), want)
    return s, status, head, rest


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    masked = bytes(c ^ key[i & 3] for i, c in enumerate(payload))
    return hdr + key + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class Reader:
    """Reads server frames (unmasked) from a socket."""

    def __init__(self, sock: socket.socket, rest: bytes = b""):
        self.s = sock
        self.buf = rest

    def _need(self, n: int) -> bool:
        while len(self.buf) < n:
            try:
                chunk = self.s.recv(65536)
            except ConnectionResetError:
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def read(self):
        """(fin, opcode, payload) or None at EOF."""
        if not self._need(2):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames must not be masked"
        n, off = b1 & 0x7F, 2
        if n == 126:
            if not self._need(4):
                return None
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            if not self._need(10):
                return None
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        if not self._need(off + n):
            return None
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        self.last_rsv = (b0 >> 4) & 7
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def read_close(self):
        """Skip data/ping frames until a close: (code, reason) or None when the TCP closed first."""
        while True:
            f = self.read()
            if f is None:
                return None
            if f[1] == 0x8:
                p = f[2]
                return (struct.unpack("!H", p[:2])[0], p[2:]) if p else (1005, b"")

    def at_eof(self) -> bool:
        return not self._need(len(self.buf) + 1)



def open_ws(st, path="/", nodelay=False):
    """An accepted WebSocket on server thread `st`: (socket, Reader)."""
    s, status, _, rest = handshake(st.port, path)
    assert status == 101
    if nodelay:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, Reader(s, rest)
