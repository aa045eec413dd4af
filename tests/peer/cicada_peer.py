"""pytest plugin: run Starlette's and FastAPI's own test suites against cicada's middleware.

Loaded with `-p cicada_peer` (tests/peer on PYTHONPATH) by scripts/peer_tests.sh; it is not
collected by our own test run. It only swaps classes and wraps one method: it must not change
what a peer test asserts. The mode comes from CICADA_PEER_MODE:

- `plain`: nothing swapped (the reference run, to tell version or environment failures apart);
- `subclass`: `starlette.middleware.base.BaseHTTPMiddleware` is cicada's `HTTPMiddleware`, so
  test classes deriving from it, `add_middleware(BaseHTTPMiddleware, ...)` and FastAPI's
  `@app.middleware("http")` all get ours;
- `accelerate`: apps are left as written; every Starlette/FastAPI app runs
  `cicada.middleware.accelerate(app)` right before its middleware stack is built.

CICADA_PEER_LOOP (asyncio, uvloop or cicada) picks the event loop of anyio's asyncio backend
(as the event loop policy, which anyio's runner and TestClient's portal use).

The terminal summary says how many middleware stacks were built and how many of their layers ran
on cicada, so a run that silently exercised nothing of ours shows up.
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings

MODES = ("plain", "subclass", "accelerate")
MODE = os.environ.get("CICADA_PEER_MODE", "plain")
if MODE not in MODES:
    raise RuntimeError(f"CICADA_PEER_MODE must be one of {', '.join(MODES)}, not {MODE!r}")

LOOPS = ("asyncio", "uvloop", "cicada")
LOOP = os.environ.get("CICADA_PEER_LOOP", "asyncio")
if LOOP not in LOOPS:
    raise RuntimeError(f"CICADA_PEER_LOOP must be one of {', '.join(LOOPS)}, not {LOOP!r}")

_counts = {"stacks": 0, "base_layers": 0, "cicada_layers": 0, "left_as_base": []}


def _patch():
    import starlette.middleware.base as base
    from starlette.applications import Starlette

    import cicada.middleware as cm

    original = base.BaseHTTPMiddleware

    if MODE == "subclass":
        base.BaseHTTPMiddleware = cm.HTTPMiddleware
        # any module already holding the name (imported before us) gets ours too, except cicada's
        for name, mod in list(sys.modules.items()):
            if mod is None or mod is cm or mod is base or name.startswith("cicada"):
                continue
            if getattr(mod, "BaseHTTPMiddleware", None) is original:
                setattr(mod, "BaseHTTPMiddleware", cm.HTTPMiddleware)

    def wrap(cls):
        build = cls.__dict__.get("build_middleware_stack")
        if build is None or getattr(build, "_cicada_peer", False):
            return

        def build_middleware_stack(self):
            if MODE == "accelerate":
                cm.accelerate(self)
            _counts["stacks"] += 1
            for entry in self.user_middleware:
                layer = entry.cls
                if isinstance(layer, type) and issubclass(layer, original):
                    if issubclass(layer, cm.HTTPMiddleware):
                        _counts["cicada_layers"] += 1
                    else:
                        _counts["base_layers"] += 1
                        _counts["left_as_base"].append(layer.__qualname__)
            return build(self)

        build_middleware_stack._cicada_peer = True
        cls.build_middleware_stack = build_middleware_stack

    wrap(Starlette)
    try:
        from fastapi import FastAPI
    except ImportError:
        pass
    else:
        wrap(FastAPI)


_patch()


def _set_loop():
    if LOOP == "uvloop":
        import uvloop

        policy = uvloop.EventLoopPolicy()
    else:
        import cicada.loop

        policy = cicada.loop.EventLoopPolicy()
    with warnings.catch_warnings():  # policies are deprecated from 3.14 on; still the one hook
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(policy)


if LOOP != "asyncio":
    _set_loop()


def pytest_report_header(config):
    import cicada

    return (
        f"cicada peer mode: {MODE}, loop: {LOOP} (cicada from {os.path.dirname(cicada.__file__)})"
    )


def pytest_terminal_summary(terminalreporter):
    c = _counts
    # in plain mode every layer is Starlette's: naming them says nothing
    left = sorted(set(c["left_as_base"])) if MODE != "plain" else []
    probe = asyncio.new_event_loop()
    loop = type(probe).__module__
    probe.close()
    terminalreporter.write_line(
        f"cicada peer mode {MODE} (loop from {loop}): {c['stacks']} middleware stacks built, "
        f"{c['cicada_layers']} BaseHTTPMiddleware-style layers on cicada, "
        f"{c['base_layers']} on Starlette's" + (f" ({', '.join(left)})" if left else "")
    )
