"""Which loop `--loop auto` (the default) picks: cicada's own, else uvloop, else asyncio."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from cicada import loops


@pytest.fixture
def keep_policy():
    # Picking cicada's loop installs its policy, as uvicorn does for uvloop: put ours back.
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


def test_auto_picks_cicada_loop(keep_policy):
    import cicada.loop

    factory = loops.resolve_loop_factory("auto")
    assert factory is cicada.loop.new_event_loop
    assert isinstance(asyncio.get_event_loop_policy(), cicada.loop.EventLoopPolicy)
    loop = factory()
    try:
        assert isinstance(loop, cicada.loop.Loop)
    finally:
        loop.close()


def test_auto_without_cicada_loop_falls_back(monkeypatch, keep_policy):
    def missing():
        raise loops.LoopUnavailable(loops.CICADA_LOOP_MISSING)

    monkeypatch.setattr(loops, "_cicada_loop", missing)
    factory = loops.resolve_loop_factory("auto")
    if importlib.util.find_spec("uvloop"):
        import uvloop

        assert factory is uvloop.new_event_loop
    else:
        assert factory is asyncio.SelectorEventLoop


def test_auto_without_cicada_loop_or_uvloop_is_asyncio(monkeypatch, keep_policy):
    def missing():
        raise loops.LoopUnavailable("absent")

    monkeypatch.setattr(loops, "_cicada_loop", missing)
    monkeypatch.setattr(loops, "_uvloop", missing)
    assert loops.resolve_loop_factory("auto") is asyncio.SelectorEventLoop
