"""Re-entrancy: run_until_complete while the loop runs, a second cicada loop nested in the first,
cicada.run_sync in its three contexts, strict mode, and the three snippets from the user's story
(sync code calling async code from an app module imported while the loop runs)."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import subprocess
import sys
import textwrap

import pytest

import cicada
import cicada.loop
from cicada.loop import Loop

VAR = contextvars.ContextVar("VAR", default="unset")


async def add(a, b):
    await asyncio.sleep(0.001)
    return a + b


@pytest.fixture
def cicada_policy():
    old = asyncio.get_event_loop_policy()
    cicada.loop.install()
    yield
    asyncio.set_event_loop_policy(old)


def test_nested_from_sync_code_in_task():
    state = {}

    def sync_helper():
        loop = asyncio.get_event_loop()
        outer = asyncio.current_task()
        VAR.set("outer-value")
        r = loop.run_until_complete(add(1, 2))
        state["same_task"] = asyncio.current_task() is outer
        state["running"] = asyncio.get_running_loop() is loop
        return r

    async def main():
        other = asyncio.create_task(add(10, 20))  # other tasks keep running in the nested run
        r = sync_helper()
        state["other_done"] = other.done()
        state["var"] = VAR.get()
        return r

    assert cicada.loop.run(main()) == 3
    assert state == {"same_task": True, "running": True, "other_done": True,
                     "var": "outer-value"}


def test_nested_task_sees_own_current_task_and_context():
    seen = {}

    async def inner():
        seen["inner_task"] = asyncio.current_task()
        seen["inner_var"] = VAR.get()
        return "ok"

    async def main():
        VAR.set("from-outer")
        me = asyncio.current_task()
        r = asyncio.get_running_loop().run_until_complete(inner())
        seen["outer_task_back"] = asyncio.current_task() is me
        assert seen["inner_task"] is not me
        return r

    assert cicada.loop.run(main()) == "ok"
    assert seen["inner_var"] == "from-outer"  # the nested task copies the caller's context
    assert seen["outer_task_back"]


def test_nested_from_plain_callback():
    lp = Loop()
    out = []

    def cb():
        out.append(lp.run_until_complete(add(2, 3)))
        lp.stop()

    lp.call_soon(cb)
    lp.run_forever()
    lp.close()
    assert out == [5]


def test_deep_nesting():
    def level(n):
        async def co():
            if n == 0:
                return 0
            await asyncio.sleep(0)
            return 1 + level(n - 1)

        return asyncio.get_event_loop().run_until_complete(co())

    async def main():
        return level(20)

    assert cicada.loop.run(main()) == 20


def test_stop_during_nested_run_is_deferred():
    lp = Loop()
    order = []

    async def inner():
        lp.stop()  # asks the outer run_forever to stop; the nested run finishes first
        await asyncio.sleep(0.001)
        order.append("inner-done")
        return 1

    def cb():
        order.append(lp.run_until_complete(inner()))

    lp.call_soon(cb)
    lp.run_forever()  # returns because the deferred stop is honoured
    lp.close()
    assert order == ["inner-done", 1]


def test_nested_exception_propagates():
    async def bad():
        await asyncio.sleep(0)
        raise KeyError("x")

    async def main():
        with pytest.raises(KeyError):
            asyncio.get_running_loop().run_until_complete(bad())
        return "still fine"

    assert cicada.loop.run(main()) == "still fine"


def test_second_cicada_loop_nested_in_running_one():
    async def main():
        outer = asyncio.get_running_loop()
        other = Loop()
        r = other.run_until_complete(add(4, 5))
        assert asyncio.get_running_loop() is outer
        assert not other.is_running()
        other.close()
        return r

    assert cicada.loop.run(main()) == 9


def test_asyncgen_hooks_restored():
    async def agen():
        yield 1

    async def main():
        hooks = sys.get_asyncgen_hooks()
        other = Loop()

        async def use():
            async for _ in agen():
                pass

        other.run_until_complete(use())
        other.close()
        asyncio.get_running_loop().run_until_complete(use())
        assert sys.get_asyncgen_hooks() == hooks

    cicada.loop.run(main())


@pytest.mark.parametrize("how", ["arg", "env"])
def test_strict_mode(how, monkeypatch):
    if how == "env":
        monkeypatch.setenv("CICADA_NESTED", "0")
        lp = Loop()
    else:
        lp = Loop(nested=False)
    errs = []

    async def main():
        coro = add(1, 1)
        try:
            lp.run_until_complete(coro)
        except RuntimeError as e:
            errs.append(str(e))
        coro.close()
        other = Loop(nested=False)
        coro = add(1, 1)
        try:
            other.run_until_complete(coro)
        except RuntimeError as e:
            errs.append(str(e))
        coro.close()
        other.close()

    lp.run_until_complete(main())
    lp.close()
    assert errs == ["This event loop is already running",
                    "Cannot run the event loop while another loop is running"]


# -- run_sync in its three contexts -----------------------------------------------------------

def test_run_sync_without_loop():
    assert cicada.run_sync(add(1, 2)) == 3
    assert asyncio._get_running_loop() is None


def test_run_sync_inside_cicada_loop():
    async def main():
        loop = asyncio.get_running_loop()
        r = cicada.run_sync(add(3, 4))
        assert asyncio.get_running_loop() is loop
        return r

    assert cicada.loop.run(main()) == 7


def _run_sync_in_foreign_loop(loop_factory):
    import threading

    async def who():
        await asyncio.sleep(0.001)
        return type(asyncio.get_running_loop()), threading.current_thread().name

    async def main():
        return cicada.run_sync(who())

    with asyncio.Runner(loop_factory=loop_factory) as r:
        return r.run(main())


def test_run_sync_inside_asyncio_loop():
    cls, thread = _run_sync_in_foreign_loop(asyncio.SelectorEventLoop)
    assert cls is Loop and thread == "cicada-run_sync"


def test_run_sync_inside_uvloop():
    uvloop = pytest.importorskip("uvloop")
    cls, thread = _run_sync_in_foreign_loop(uvloop.new_event_loop)
    assert cls is Loop and thread == "cicada-run_sync"


def test_run_sync_inside_strict_cicada_loop_uses_thread():
    cls, thread = _run_sync_in_foreign_loop(lambda: Loop(nested=False))
    assert thread == "cicada-run_sync"


def test_run_sync_exception():
    async def bad():
        raise ValueError("nope")

    async def main():
        with pytest.raises(ValueError, match="nope"):
            cicada.run_sync(bad())

    asyncio.run(main())  # plain asyncio loop: helper thread path
    cicada.loop.run(main())  # nested path


# -- the user's story: an app module doing sync -> async at import time --------------------------

from support.seed_snippets import SNIPPETS  # noqa: E402


@pytest.mark.parametrize("name", list(SNIPPETS))
def test_seed_snippet_imported_while_loop_runs(name, tmp_path, monkeypatch, cicada_policy):
    modname = f"seed_app_{name}"
    (tmp_path / f"{modname}.py").write_text(textwrap.dedent(SNIPPETS[name]))
    monkeypatch.syspath_prepend(str(tmp_path))

    async def serve():
        # what `cicada main:app` does: import the app module while the loop is running
        loop = asyncio.get_running_loop()
        ticks = []
        loop.call_later(0, ticks.append, 1)
        mod = importlib.import_module(modname)
        await asyncio.sleep(0.01)
        assert asyncio.get_running_loop() is loop
        return mod.RESULT

    try:
        assert asyncio.run(serve()) == "initialised"
    finally:
        sys.modules.pop(modname, None)
        asyncio.set_event_loop(None)


def test_seed_snippets_in_fresh_process(tmp_path):
    """The same, end to end in a clean interpreter with the policy installed by cicada."""
    for name, src in SNIPPETS.items():
        (tmp_path / f"app_{name}.py").write_text(textwrap.dedent(src))
    script = textwrap.dedent(f"""
        import asyncio, importlib, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import cicada.loop
        cicada.loop.install()
        async def main():
            return [importlib.import_module("app_" + n).RESULT for n in {list(SNIPPETS)!r}]
        print(asyncio.run(main()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(["initialised"] * 3)


def test_no_nesting_from_another_thread():
    import threading

    errs = []

    async def main():
        loop = asyncio.get_running_loop()

        def other():
            coro = add(1, 1)
            try:
                loop.run_until_complete(coro)
            except RuntimeError as e:
                errs.append(str(e))
            coro.close()
            try:
                loop.run_forever()
            except RuntimeError as e:
                errs.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        while t.is_alive():
            await asyncio.sleep(0.001)

    cicada.loop.run(main())
    assert errs == ["This event loop is already running"] * 2
