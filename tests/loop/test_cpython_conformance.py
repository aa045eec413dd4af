"""CPython's own asyncio test mixins, bound to cicada's loop in strict mode (nested=False).

Each class below is one of CPython's test classes with its loop factory pointed at
`cicada.loop.Loop(nested=False)`. Tests that inspect the stdlib loop's internals (its selector
object, its Python-level _run_once, mock-patched private methods) or rely on TestLoop's virtual
clock are skipped; every skip is listed in SKIPS with its reason and in docs/loop.md.
"""

from __future__ import annotations

import asyncio
import os
import unittest

import pytest

from cicada.loop import EventLoopPolicy, Loop

te = pytest.importorskip("test.test_asyncio.test_events")
from test.test_asyncio import test_buffered_proto as tbp  # noqa: E402
from test.test_asyncio import test_server as tsrv  # noqa: E402
from test.test_asyncio import test_sock_lowlevel as tsl  # noqa: E402
from test.test_asyncio import test_streams as tst  # noqa: E402
from test.test_asyncio import test_taskgroups as ttg  # noqa: E402
from test.test_asyncio import test_tasks as tta  # noqa: E402
from test.test_asyncio import test_timeouts as tto  # noqa: E402
from test.test_asyncio import utils as test_utils  # noqa: E402

# test name -> reason. Names are "<our class>.<test method>".
_VIRTUAL_CLOCK = ("drives test_utils.TestLoop's virtual clock through a time generator "
                  "(it tests the fake clock's arithmetic, not a real loop)")
SKIPS: dict[str, str] = {
    "TestCicadaTasks.test_as_completed": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_as_completed_concurrent": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_as_completed_reverse_wait": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_as_completed_with_timeout": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_as_completed_with_unused_timeout": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_baseexception_during_cancel": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_cancel": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_sleep": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_sleep_cancel": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_stop_while_run_in_complete": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_task_cancel_sleeping_task": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_wait": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_wait_concurrent_complete": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_wait_first_completed": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_wait_first_exception": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_wait_first_exception_in_wait": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_wait_with_exception": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_wait_with_iterator_of_tasks": _VIRTUAL_CLOCK,
    "TestCicadaTasks.test_wait_with_timeout": _VIRTUAL_CLOCK,
    # test_refleaks_in_task___init__ also skips itself on a release build (needs sys.gettotalrefcount)
}
if "libasan" in os.environ.get("LD_PRELOAD", ""):
    # Only under `make asan`: this test starts `python -I -E`, which ignores PYTHONMALLOC=malloc,
    # so LeakSanitizer sees the bare interpreter's pymalloc arenas. No cicada code runs there.
    SKIPS["TestCicadaGather.test_env_var_debug"] = (
        "under ASan its `python -I -E` child drops PYTHONMALLOC=malloc and LSan flags pymalloc")


def _strict_loop():
    return Loop(nested=False)


def _apply_skips(cls):
    prefix = cls.__name__ + "."
    for key, reason in SKIPS.items():
        if key.startswith(prefix):
            name = key[len(prefix):]

            def skipped(self, _reason=reason):
                raise unittest.SkipTest(_reason)

            skipped.__name__ = name
            setattr(cls, name, skipped)
    return cls


class _PolicyMixin:
    """asyncio.new_event_loop() returns a strict cicada loop for the duration of each test, and
    each test starts from a fresh policy: on 3.13 get_event_loop() raises, instead of making a loop,
    once an earlier test has called set_event_loop(None) on a shared one."""

    def setUp(self):
        old = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(EventLoopPolicy(nested=False))
        self.addCleanup(asyncio.set_event_loop_policy, old)
        super().setUp()


class _RealLoopForTestLoop:
    """test_utils.TestCase.new_test_loop() gives our loop; tests that drive TestLoop's virtual
    clock through a generator are skipped (they test the fake clock, not a loop)."""

    def new_test_loop(self, gen=None):
        if gen is not None:
            raise unittest.SkipTest("drives TestLoop's virtual clock (time generator)")
        loop = _strict_loop()
        self.set_event_loop(loop)
        return loop


@_apply_skips
class TestCicadaEvents(te.UnixEventLoopTestsMixin, te.SubprocessTestsMixin, test_utils.TestCase):
    def create_event_loop(self):
        return _strict_loop()


def _strict_debug_loop():
    loop = Loop(nested=False)
    loop.set_debug(True)  # the C core takes its debug paths (Python-built handles, checks)
    return loop


@_apply_skips
class TestCicadaEventsDebug(te.UnixEventLoopTestsMixin, te.SubprocessTestsMixin,
                            test_utils.TestCase):
    def create_event_loop(self):
        return _strict_debug_loop()


@_apply_skips
class TestCicadaSockLowlevelDebug(tsl.BaseSockTestsMixin, test_utils.TestCase):
    def create_event_loop(self):
        return _strict_debug_loop()


@_apply_skips
class TestCicadaSockLowlevel(tsl.BaseSockTestsMixin, test_utils.TestCase):
    def create_event_loop(self):
        return _strict_loop()


@_apply_skips
class TestCicadaStartServer(tsrv.SelectorStartServerTests):
    def new_loop(self):
        return _strict_loop()


@_apply_skips
class TestCicadaBufferedProto(tbp.BufferedProtocolSelectorTests):
    def new_loop(self):
        return _strict_loop()


@_apply_skips
class TestCicadaStreams(_PolicyMixin, tst.StreamTests):
    pass


@_apply_skips
class TestCicadaTasks(_RealLoopForTestLoop, tta.CTask_CFuture_Tests):
    pass


@_apply_skips
class TestCicadaGather(_RealLoopForTestLoop, tta.CoroutineGatherTests):
    pass


@_apply_skips
class TestCicadaRunCoroutineThreadsafe(_RealLoopForTestLoop, tta.RunCoroutineThreadsafeTests):
    pass


class _RunnerMixin:
    def _setupAsyncioRunner(self):
        assert self._asyncioRunner is None
        self._asyncioRunner = asyncio.Runner(debug=True, loop_factory=_strict_loop)


@_apply_skips
class TestCicadaTaskGroups(_PolicyMixin, _RunnerMixin, ttg.TestTaskGroup):
    pass


@_apply_skips
class TestCicadaTimeouts(_RunnerMixin, tto.TimeoutTests):
    pass
