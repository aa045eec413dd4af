"""Raw ASGI apps the CLI/integration tests serve (``testapps:<name>``)."""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import parse_qs


async def _body(receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


async def _send_json(send, obj, status=200, headers=()):
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    """Echo app: /scope, /slow?s=, /pid, /upload (counts bytes), /download?n=&chunk=, else hello."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    path = scope["path"]
    root = scope.get("root_path") or ""
    if root and path.startswith(root):  # ASGI: path includes root_path; route on the rest
        path = path[len(root):]
    qs = parse_qs(scope["query_string"].decode())
    if path == "/scope":
        await _body(receive)
        await _send_json(send, {
            "path": scope["path"], "root_path": scope.get("root_path"),
            "client": list(scope["client"]) if scope.get("client") else None,
            "scheme": scope["scheme"], "http_version": scope["http_version"],
            "state": sorted((scope.get("state") or {}).keys()),
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        })
    elif path == "/slow":
        await asyncio.sleep(float(qs.get("s", ["1"])[0]))
        await _send_json(send, {"slept": True, "pid": os.getpid()})
    elif path == "/pid":
        await _send_json(send, {"pid": os.getpid()})
    elif path == "/block":  # blocks the event loop (a sync call in an async endpoint)
        import time

        time.sleep(float(qs.get("s", ["1"])[0]))
        await _send_json(send, {"blocked": True, "pid": os.getpid()})
    elif path == "/upload":
        total = 0
        while True:
            msg = await receive()
            total += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        await _send_json(send, {"received": total})
    elif path == "/download":
        n = int(qs.get("n", ["1048576"])[0])
        chunk = int(qs.get("chunk", ["65536"])[0])
        block = b"x" * chunk
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(n).encode())]})
        sent = 0
        while sent < n:
            piece = block if n - sent >= chunk else block[: n - sent]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < n})
    else:
        await _body(receive)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"Hello, world!"})


async def lifespan_state_app(scope, receive, send):
    """Lifespan puts values in state; requests report them. Shutdown writes a marker file."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                scope["state"]["db"] = "connected"
                print("LIFESPAN STARTUP", flush=True)
                await send({"type": "lifespan.startup.complete"})
            else:
                print("LIFESPAN SHUTDOWN", flush=True)
                marker = os.environ.get("SHUTDOWN_MARKER")
                if marker:
                    with open(marker, "w") as fh:
                        fh.write("done")
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _body(receive)
    await _send_json(send, {"db": scope["state"].get("db")})


async def startup_fails(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return


async def startup_raises(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("boom in startup")


async def no_lifespan(scope, receive, send):
    """Raises on the lifespan scope (like old frameworks); serves http."""
    if scope["type"] != "http":
        raise RuntimeError("lifespan unsupported here")
    await _body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def asgi2_app(scope):
    async def instance(receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2"})
    return instance


def create_app():
    return app


def wsgi_app(environ, start_response):
    start_response("200 OK", [])
    return [b"wsgi"]


class Nested:
    class Inner:
        app = app


async def crash_on_request(scope, receive, send):
    """Serves, but any request to /crash kills the worker process outright."""
    if scope["type"] == "lifespan":
        return await app(scope, receive, send)
    if scope["path"] == "/crash":
        os._exit(13)
    await app(scope, receive, send)


async def slow_startup(scope, receive, send):
    """Its lifespan startup takes 2 s (a worker can be caught while starting)."""
    if scope["type"] == "lifespan":
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await asyncio.sleep(2)
        await app(scope, _replay(msg, receive), send)
        return
    await app(scope, receive, send)


def _replay(first, receive):
    sent = []

    async def again():
        if not sent:
            sent.append(first)
            return first
        return await receive()

    return again


async def env_app(scope, receive, send):
    """Reports an environment variable (for --env-file)."""
    if scope["type"] == "lifespan":
        return await app(scope, receive, send)
    await _send_json(send, {"greeting": os.environ.get("GREETING")})


async def tls_app(scope, receive, send):
    """/upload echoes the byte count; websocket: sends the scheme, echoes one message, closes."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        if scope["path"] == "/wstls":
            tls = scope["extensions"].get("tls")
            await send({"type": "websocket.send", "text": str(tls and tls["tls_version"])})
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "websocket.send", "text": scope["scheme"]})
        msg = await receive()
        await send({"type": "websocket.send", "bytes": msg.get("bytes"), "text": msg.get("text")})
        await send({"type": "websocket.close", "code": 1000})
        return
    if scope["path"] == "/download":
        return await app(scope, receive, send)
    if scope["path"] == "/tls":  # the ASGI tls extension, present on TLS connections only
        tls = scope["extensions"].get("tls")
        if tls is not None:
            tls = dict(tls, client_cert_chain=list(tls["client_cert_chain"]))
        return await _send_json(send, {"tls": tls, "keys": sorted(scope["extensions"])})
    body = await _body(receive)
    await _send_json(send, {"scheme": scope["scheme"], "received": len(body), "path": scope["path"]})
