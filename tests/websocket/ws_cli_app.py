"""App for the CLI WebSocket tests (imported by `python -m cicada ws_cli_app:app`): echoes, and
answers "hold" by streaming a few messages before waiting; records nothing (separate process)."""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "websocket"
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        if m.get("text") == "hold":
            for i in range(3):
                await send({"type": "websocket.send", "text": f"in-flight {i}"})
            continue
        await send({"type": "websocket.send", **{k: m[k] for k in ("text", "bytes") if k in m}})
