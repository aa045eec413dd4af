"""ASGI apps shared by the WebSocket tests."""

from __future__ import annotations


async def echo(scope, receive, send):
    """Accepts (with the first offered subprotocol), echoes every message, records the end."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    sub = scope["subprotocols"][0] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": sub})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            echo.events.append(m)
            return
        if "text" in m:
            await send({"type": "websocket.send", "text": m["text"]})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})


echo.events = []


async def quiet_echo(scope, receive, send):
    """Like echo but keeps nothing (echo records every disconnect): for memory tests."""
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", **{k: m[k] for k in ("text", "bytes") if k in m}})


class Recorder:
    """An app built from a coroutine `body(scope, receive, send)`, recording what it saw."""

    def __init__(self, body):
        self.body = body
        self.events: list = []
        self.errors: list[BaseException] = []
        self.scopes: list[dict] = []

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        try:
            await self.body(self, scope, receive, send)
        except BaseException as exc:
            self.errors.append(exc)
            raise


def recording_echo():
    """Accepts, echoes every message and records what it received (disconnect included)."""
    async def body(app, scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            app.events.append(m)
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", **{k: m[k] for k in ("text", "bytes") if k in m}})
    return Recorder(body)
