"""RFC 6455 at the server level with a raw-socket client (Autobahn-style categories): framing,
pings/pongs, reserved bits and opcodes (1002), fragmentation, UTF-8 (1007, also split across
frames), close handling, limits (1009). Bad input never crashes: the connection closes with the
right code and the app hears a disconnect."""

from __future__ import annotations

import struct

import pytest

from ws_apps import echo, recording_echo
from wsraw import close_payload, frame, open_ws, wait_for


# -- framing ---------------------------------------------------------------------------------
def test_frame_lengths_7_16_64_bit(serve):
    st = serve(echo)
    s, r = open_ws(st)
    for n in (0, 125, 126, 65535, 65536, 200_000):
        s.sendall(frame(0x2, b"z" * n))
        fin, op, p = r.read()
        assert (fin, op, p) == (True, 0x2, b"z" * n)


def test_frame_sent_byte_by_byte(serve):
    st = serve(echo)
    s, r = open_ws(st)
    data = frame(0x1, b"slowly " * 40)
    for i in range(len(data)):
        s.send(data[i:i + 1])
    assert r.read() == (True, 0x1, b"slowly " * 40)


def test_many_frames_in_one_write(serve):
    st = serve(echo)
    s, r = open_ws(st)
    s.sendall(b"".join(frame(0x1, str(i).encode()) for i in range(500)))
    for i in range(500):
        assert r.read()[2] == str(i).encode()


@pytest.mark.parametrize("name,data", [
    ("unmasked", frame(0x1, b"hi", mask=False)),
    ("rsv2", frame(0x1, b"hi", rsv=2)),
    ("rsv3", frame(0x1, b"hi", rsv=1 | 2 | 4)),
    ("rsv1-without-deflate", frame(0x1, b"hi", rsv=4)),
    ("opcode-3", frame(0x3, b"")),
    ("opcode-b", frame(0xB, b"")),
    ("control-fragmented", frame(0x9, b"", fin=False)),
    ("control-too-long", frame(0x9, b"x" * 126)),
    ("continuation-first", frame(0x0, b"x")),
    ("new-message-mid-fragment", frame(0x1, b"a", fin=False) + frame(0x1, b"b")),
    ("close-1-byte", frame(0x8, b"\x03")),
    ("close-code-1005", frame(0x8, close_payload(1005))),
    ("close-code-999", frame(0x8, close_payload(999))),
    ("close-code-5000", frame(0x8, close_payload(5000))),
])
def test_protocol_errors_close_1002(serve, name, data):
    app = recording_echo()
    st = serve(app)
    s, r = open_ws(st)
    s.sendall(data)
    assert r.read_close()[0] == 1002
    assert r.at_eof()
    assert wait_for(lambda: app.events and app.events[-1]["type"] == "websocket.disconnect")
    assert app.events[-1]["code"] == 1002


# -- pings and pongs --------------------------------------------------------------------------
def test_ping_is_answered_with_same_payload(serve):
    st = serve(echo)
    s, r = open_ws(st)
    for payload in (b"", b"abc", b"\xff" * 125):
        s.sendall(frame(0x9, payload))
        assert r.read() == (True, 0xA, payload)


def test_unsolicited_pong_is_ignored(serve):
    st = serve(echo)
    s, r = open_ws(st)
    s.sendall(frame(0xA, b"hello") + frame(0x1, b"after"))
    assert r.read() == (True, 0x1, b"after")


# -- fragmentation ----------------------------------------------------------------------------
def test_fragments_with_interleaved_control_frames(serve):
    st = serve(echo)
    s, r = open_ws(st)
    s.sendall(frame(0x1, b"frag", fin=False) + frame(0x9, b"p1") + frame(0x0, b"men", fin=False) +
              frame(0xA, b"") + frame(0x9, b"p2") + frame(0x0, b"ted"))
    assert r.read() == (True, 0xA, b"p1")
    assert r.read() == (True, 0xA, b"p2")
    assert r.read() == (True, 0x1, b"fragmented")


def test_empty_fragments(serve):
    st = serve(echo)
    s, r = open_ws(st)
    s.sendall(frame(0x2, b"", fin=False) + frame(0x0, b"", fin=False) + frame(0x0, b""))
    assert r.read() == (True, 0x2, b"")


# -- UTF-8 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("parts", [
    [b"\xff"],
    [b"abc\xc0\xaf"],  # overlong
    [b"\xed\xa0\x80"],  # surrogate
    [b"\xf4\x90\x80\x80"],  # > U+10FFFF
    [b"ok\xe2\x82"],  # truncated at the end
    [b"\xce", b"\xba\xe1\xbd", b"\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"],  # split, then bad
])
def test_invalid_utf8_closes_1007(serve, parts):
    app = recording_echo()
    st = serve(app)
    s, r = open_ws(st)
    frames = [frame(0x1 if i == 0 else 0x0, p, fin=(i == len(parts) - 1)) for i, p in enumerate(parts)]
    s.sendall(b"".join(frames))
    assert r.read_close()[0] == 1007
    assert wait_for(lambda: app.events and app.events[-1]["type"] == "websocket.disconnect")
    assert app.events[-1]["code"] == 1007


def test_valid_utf8_split_inside_characters(serve):
    st = serve(echo)
    s, r = open_ws(st)
    text = "κόσμε 𝄞 ✓".encode()
    parts = [text[i:i + 1] for i in range(len(text))]
    s.sendall(b"".join(frame(0x1 if i == 0 else 0x0, p, fin=(i == len(parts) - 1))
                       for i, p in enumerate(parts)))
    assert r.read() == (True, 0x1, text)


def test_invalid_utf8_close_reason_is_1007(serve):
    st = serve(echo)
    s, r = open_ws(st)
    s.sendall(frame(0x8, close_payload(1000, b"\xff")))
    assert r.read_close()[0] == 1007


# -- close handling ---------------------------------------------------------------------------
def test_close_is_echoed_and_tcp_closed(serve):
    app = recording_echo()
    st = serve(app)
    s, r = open_ws(st)
    s.sendall(frame(0x8, close_payload(4999, b"bye")))
    assert r.read_close() == (4999, b"bye")
    assert r.at_eof()
    assert wait_for(lambda: app.events)
    assert app.events[-1] == {"type": "websocket.disconnect", "code": 4999, "reason": "bye"}


def test_empty_close_is_answered_empty_and_reports_1005(serve):
    app = recording_echo()
    st = serve(app)
    s, r = open_ws(st)
    s.sendall(frame(0x8, b""))
    assert r.read_close() == (1005, b"")
    assert wait_for(lambda: app.events)
    assert app.events[-1]["code"] == 1005


def test_data_after_close_is_ignored(serve):
    st = serve(echo)
    s, r = open_ws(st)
    s.sendall(frame(0x8, close_payload(1000)) + frame(0x1, b"ignored"))
    assert r.read_close() == (1000, b"")
    assert r.at_eof()


def test_tcp_eof_without_close_is_1006(serve):
    app = recording_echo()
    st = serve(app)
    s, r = open_ws(st)
    s.sendall(frame(0x1, b"x", fin=False))
    import socket

    s.shutdown(socket.SHUT_WR)
    assert wait_for(lambda: app.events)
    assert app.events[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


# -- limits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["one-frame", "fragments"])
def test_too_big_closes_1009(serve, how):
    app = recording_echo()
    st = serve(app, ws_max_size=1000)
    s, r = open_ws(st)
    s.sendall(frame(0x2, b"a" * 1000))
    assert r.read()[2] == b"a" * 1000  # at the limit: fine
    if how == "one-frame":
        s.sendall(frame(0x2, b"a" * 1001))
    else:
        s.sendall(frame(0x2, b"a" * 600, fin=False) + frame(0x0, b"a" * 600))
    assert r.read_close()[0] == 1009
    assert wait_for(lambda: app.events and app.events[-1]["type"] == "websocket.disconnect")
    assert app.events[-1]["code"] == 1009


def test_huge_declared_length_fails_before_payload(serve):
    st = serve(echo, ws_max_size=1 << 20)
    s, r = open_ws(st)
    s.sendall(struct.pack("!BBQ", 0x82, 0xFF, 1 << 40) + b"mask")
    assert r.read_close()[0] == 1009


def test_garbage_streams_never_crash(serve):
    import random

    rnd = random.Random(1234)
    st = serve(echo)
    for _ in range(30):
        s, r = open_ws(st)
        s.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 400))))
        s.close()
    s, r = open_ws(st)  # still serving
    s.sendall(frame(0x1, b"alive"))
    assert r.read()[2] == b"alive"
