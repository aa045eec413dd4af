"""The echo app the Autobahn testsuite's fuzzing client talks to (run.py serves it).

Plain ASGI, so cicada and uvicorn run the same code: accept (permessage-deflate is the server's
business, on by default in both), then send back every message as it came, text as text.
"""


async def app(scope, receive, send):
    if scope["type"] != "websocket":  # lifespan, or a stray HTTP request
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        if m.get("text") is not None:
            await send({"type": "websocket.send", "text": m["text"]})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})
