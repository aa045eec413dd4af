"""permessage-deflate (RFC 7692): negotiation with the websockets client, round trips with and
without context takeover and with window limits, compressed frames on the wire checked with
zlib, corrupt data (1007), inflated size limit (1009), and --ws-per-message-deflate off."""

from __future__ import annotations

import asyncio
import zlib

import pytest
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from ws_apps import Recorder, echo
from wsraw import Reader, frame, handshake


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def deflate_msg(data: bytes, co=None) -> bytes:
    co = co or zlib.compressobj(6, zlib.DEFLATED, -15)
    out = co.compress(data) + co.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate_msg(data: bytes, do=None) -> bytes:
    do = do or zlib.decompressobj(-15)
    return do.decompress(data + b"\x00\x00\xff\xff")


@pytest.mark.parametrize("params", [
    {},
    {"client_no_context_takeover": True, "server_no_context_takeover": True},
    {"server_max_window_bits": 10, "client_max_window_bits": 9},
    {"server_no_context_takeover": True, "client_max_window_bits": 15},
])
def test_round_trips_with_websockets_client(serve, params):
    st = serve(echo)

    async def go():
        async with connect(f"ws://127.0.0.1:{st.port}/", max_size=None,
                           extensions=[ClientPerMessageDeflateFactory(**params)],
                           compression=None) as ws:
            ext = ws.response.headers["sec-websocket-extensions"]
            assert ext.startswith("permessage-deflate")
            for name in ("server_no_context_takeover", "client_no_context_takeover"):
                if params.get(name):
                    assert name in ext
            msgs = ["repeat " * 500, "repeat " * 500, "ünïcödé ✓" * 1000, "x", ""]
            msgs += [bytes(range(256)) * 400, b"\x00" * 100_000]
            for m in msgs:
                await ws.send(m)
                assert await ws.recv() == m

    run(go())


def test_server_frames_are_compressed_and_inflate_with_zlib(serve):
    st = serve(echo)
    s, status, head, rest = handshake(st.port, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    assert status == 101 and b"sec-websocket-extensions: permessage-deflate" in head
    r = Reader(s, rest)
    co, do = zlib.compressobj(6, zlib.DEFLATED, -15), zlib.decompressobj(-15)
    text = b"compress me please " * 1000
    for _ in range(3):  # context takeover both ways
        s.sendall(frame(0x1, deflate_msg(text, co), rsv=4))
        fin, op, payload = r.read()
        assert fin and op == 0x1 and r.last_rsv == 4
        assert len(payload) < len(text) // 10
        assert inflate_msg(payload, do) == text


def test_corrupt_compressed_data_closes_1007(serve):
    st = serve(echo)
    s, status, _, rest = handshake(st.port, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    assert status == 101
    s.sendall(frame(0x2, b"\xff\xff\xff\xff garbage", rsv=4))
    assert Reader(s, rest).read_close()[0] == 1007


def test_compressed_invalid_utf8_closes_1007(serve):
    st = serve(echo)
    s, status, _, rest = handshake(st.port, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    s.sendall(frame(0x1, deflate_msg(b"ok" * 100 + b"\xed\xa0\x80"), rsv=4))
    assert Reader(s, rest).read_close()[0] == 1007


def test_decompression_bomb_closes_1009(serve):
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            app.events.append(m)
            if m["type"] == "websocket.disconnect":
                return

    app = Recorder(body)
    st = serve(app, ws_max_size=64 * 1024)
    s, status, _, rest = handshake(st.port, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    bomb = deflate_msg(b"\x00" * (10 << 20))
    assert len(bomb) < 64 * 1024
    s.sendall(frame(0x2, bomb, rsv=4))
    assert Reader(s, rest).read_close()[0] == 1009


def test_per_message_deflate_off(serve):
    st = serve(echo, ws_per_message_deflate=False)
    s, status, head, rest = handshake(st.port, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    assert status == 101 and b"sec-websocket-extensions" not in head.lower()
    s.sendall(frame(0x1, b"hi", rsv=4))  # RSV1 not negotiated
    assert Reader(s, rest).read_close()[0] == 1002


def test_unacceptable_offer_falls_back_to_no_compression(serve):
    st = serve(echo)
    s, status, head, rest = handshake(
        st.port, extra=b"Sec-WebSocket-Extensions: permessage-deflate; unknown_param\r\n")
    assert status == 101 and b"sec-websocket-extensions" not in head.lower()
    s.sendall(frame(0x1, b"plain"))
    assert Reader(s, rest).read() == (True, 0x1, b"plain")
