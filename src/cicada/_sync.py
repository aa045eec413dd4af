"""cicada.run_sync(coro): run a coroutine to completion from synchronous code, wherever it is.

- no running loop in this thread: on a new cicada loop, closed afterwards;
- inside a running cicada loop (nesting on): a nested run_until_complete on that loop;
- inside another running loop (asyncio, uvloop, or cicada with nested=False): on a new cicada
  loop in a helper thread, blocking this thread until done. The outer loop is blocked meanwhile,
  and objects bound to the outer loop (its futures, streams, locks) cannot be used by the coroutine.
The event loop policy is never changed.
"""

from __future__ import annotations

import threading
from asyncio import events


def _run_fresh(coro):
    from cicada.loop import run

    return run(coro)


def run_sync(coro):
    from cicada.loop import Loop

    running = events._get_running_loop()
    if running is None:
        return _run_fresh(coro)
    if isinstance(running, Loop) and running._nested:
        return running.run_until_complete(coro)
    box: dict = {}

    def target():
        try:
            box["result"] = _run_fresh(coro)
        except BaseException as exc:  # carried back to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="cicada-run_sync")
    t.start()
    t.join()
    if "error" in box:
        err = box.pop("error")
        try:
            raise err
        finally:
            del err
    return box["result"]
