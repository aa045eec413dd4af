"""Unit tests for the C core of cicada's loop: scheduling, timers, I/O watchers, wake-ups,
signals, stop/close and error handling."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time

import pytest

import cicada.loop
from cicada import _core
from cicada.loop import Loop


@pytest.fixture
def loop():
    lp = Loop()
    yield lp
    if not lp.is_closed():
        lp.close()


def test_types():
    lp = Loop()
    try:
        assert isinstance(lp, asyncio.AbstractEventLoop)
        assert isinstance(lp, _core.LoopCore)
        assert lp.get_debug() is asyncio.coroutines._is_debug_mode()
    finally:
        lp.close()


def test_call_soon_fifo_args_context(loop):
    out = []
    var = contextvars.ContextVar("v", default="outer")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inner")
    loop.call_soon(out.append, 1)
    loop.call_soon(lambda a, b: out.append(a + b), 2, 3)
    loop.call_soon(lambda: out.append(var.get()), context=ctx)
    loop.call_soon(lambda: out.append(var.get()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [1, 5, "inner", "outer"]


def test_call_soon_bad_keyword(loop):
    with pytest.raises(TypeError, match="unexpected keyword"):
        loop.call_soon(print, ctx=None)
    with pytest.raises(TypeError):
        loop.call_soon()


def test_handle_api(loop):
    h = loop.call_soon(print)
    assert isinstance(h, asyncio.Handle) and not isinstance(h, asyncio.TimerHandle)
    ctx = h.get_context() if hasattr(h, "get_context") else h._context  # get_context: 3.12+
    assert isinstance(ctx, contextvars.Context)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    t = loop.call_later(10, print)
    assert isinstance(t, asyncio.TimerHandle)
    assert abs(t.when() - (loop.time() + 10)) < 1
    t2 = loop.call_at(123.5, print)
    assert t2.when() == 123.5
    t.cancel()
    t2.cancel()
    assert t.cancelled()
    assert "TimerHandle" in repr(t)


def test_timer_order_and_ties(loop):
    out = []
    now = loop.time()
    for i in range(5):
        loop.call_at(now + 0.02, out.append, ("tie", i))
    loop.call_at(now + 0.01, out.append, "first")
    loop.call_later(0.03, out.append, "last")
    loop.call_later(0.04, loop.stop)
    t0 = time.monotonic()
    loop.run_forever()
    assert out == ["first"] + [("tie", i) for i in range(5)] + ["last"]
    assert time.monotonic() - t0 >= 0.035


def test_timer_not_early(loop):
    fired = []
    start = loop.time()
    loop.call_later(0.05, lambda: (fired.append(loop.time()), loop.stop()))
    loop.run_forever()
    assert fired[0] - start >= 0.05 - 0.002


def _hang_guard(loop, seconds=5.0):
    """Stops the loop from another thread if it is still blocked after `seconds`."""
    guard = threading.Timer(seconds, loop.call_soon_threadsafe, args=(loop.stop,))
    guard.start()
    return guard


def test_nan_deadline_is_due_at_once(loop):
    """A NaN deadline (a computed timeout gone wrong) is due at once, as in asyncio when it is the
    first timer; the loop used to block in epoll_wait for good ((int)ceil(NaN) is no timeout) and
    kept every timer behind it from firing."""
    out = []
    nan = loop.call_later(float("nan"), out.append, "nan")
    assert nan.when() != nan.when()  # the handle keeps the deadline it was given, as asyncio's
    loop.call_later(0.01, out.append, "later")
    loop.call_later(0.02, loop.stop)
    guard = _hang_guard(loop)
    loop.run_forever()
    guard.cancel()
    assert out == ["nan", "later"]


def test_nan_timeout_expires_at_once(loop):
    """asyncio.wait_for and asyncio.sleep with a NaN delay behave as on asyncio's loop: the
    timeout expires, the sleep returns, at once."""

    async def main():
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(1), float("nan"))
        if sys.version_info < (3, 13):
            assert await asyncio.sleep(float("nan"), "woke") == "woke"
        else:  # 3.13's asyncio.sleep refuses NaN itself, before the loop sees it
            with pytest.raises(ValueError, match="NaN"):
                await asyncio.sleep(float("nan"))
        return loop.time() - t0

    guard = _hang_guard(loop)
    assert loop.run_until_complete(main()) < 0.5
    guard.cancel()


def test_cancelled_timers_are_pruned(loop):
    handles = [loop.call_later(100 + i, print) for i in range(300)]
    for h in handles[:250]:
        h.cancel()
    assert loop._timer_cancelled_count == 250
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(loop._scheduled) == 50
    assert loop._timer_cancelled_count == 0
    assert all(not h._scheduled for h in handles[:250])


def test_cancelled_head_timers_dropped(loop):
    a = loop.call_later(0.001, print)
    b = loop.call_later(100, print)
    a.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert loop._scheduled == [b]


def test_call_soon_threadsafe_many_threads(loop):
    n_threads, per = 4, 500
    count = [0]
    done = loop.create_future()

    def bump():
        count[0] += 1
        if count[0] == n_threads * per:
            done.set_result(None)

    def worker():
        for _ in range(per):
            loop.call_soon_threadsafe(bump)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]

    async def main():
        for t in threads:
            t.start()
        await asyncio.wait_for(done, 10)

    loop.run_until_complete(main())
    for t in threads:
        t.join()
    assert count[0] == n_threads * per


def test_threadsafe_wakes_blocked_poll(loop):
    def later():
        time.sleep(0.05)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=later)
    t.start()
    t0 = time.monotonic()
    loop.run_forever()  # nothing scheduled: blocks in epoll until the wake-up
    t.join()
    assert time.monotonic() - t0 < 5


def test_reader_writer(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    got = []

    def on_read():
        got.append(a.recv(100))
        if b"".join(got) == b"hello":
            loop.stop()

    loop.add_reader(a, on_read)
    loop.add_writer(b, lambda: (b.send(b"hello"), loop.remove_writer(b)))
    loop.run_forever()
    assert b"".join(got) == b"hello"
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(b) is False
    a.close()
    b.close()


def test_replacing_reader_cancels_old(loop):
    a, b = socket.socketpair()
    h1 = loop._add_reader(a.fileno(), print)
    h2 = loop._add_reader(a.fileno(), print)
    assert h1.cancelled() and not h2.cancelled()
    assert loop._remove_reader(a.fileno())
    assert h2.cancelled()
    a.close()
    b.close()


@pytest.mark.parametrize("debug", [False, True])
def test_removed_reader_is_cancelled_as_handle_cancel_does(loop, debug):
    """Removing or replacing a reader cancels its handle as Handle.cancel() does (the callback and
    its arguments are let go), also in debug mode, where the cancel goes through the method."""
    loop.set_debug(debug)
    a, b = socket.socketpair()
    arg = type("Arg", (), {})()
    h1 = loop._add_reader(a.fileno(), print, arg)
    h2 = loop._add_reader(a.fileno(), print, arg)
    assert loop._remove_writer(a.fileno()) is False
    assert loop._remove_reader(a.fileno()) is True
    for h in (h1, h2):
        assert h.cancelled() and h._callback is None and h._args is None
        assert "cancelled" in repr(h)
    assert sys.getrefcount(arg) == 2  # only `arg` itself: no handle holds it any more
    a.close()
    b.close()


def test_hangup_wakes_reader(loop):
    a, b = socket.socketpair()
    seen = []
    loop.add_reader(a, lambda: (seen.append(a.recv(10)), loop.stop()))
    b.close()
    loop.run_forever()
    assert seen == [b""]
    loop.remove_reader(a)
    a.close()


def test_fd_closed_under_watcher(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, print)
    a.close()  # closed behind the loop's back: epoll forgets it, we still have an entry
    loop.call_soon(loop.stop)
    loop.run_forever()
    # the number is reused by a new socket: registering it must work (MOD -> ENOENT -> ADD)
    c, d = socket.socketpair()
    assert c.fileno() == fd or d.fileno() == fd or True
    got = []
    loop.add_reader(c, lambda: (got.append(c.recv(10)), loop.stop()))
    d.send(b"x")
    loop.run_forever()
    assert got == [b"x"]
    assert loop.remove_reader(c) is True
    assert loop.remove_reader(fd) in (True, False)
    for s in (b, c, d):
        s.close()


def test_remove_on_closed_socket_object(loop):
    a, b = socket.socketpair()
    loop.add_reader(a, print)
    a.close()  # fileno() is now -1
    assert loop.remove_reader(a) is False
    b.close()


def test_add_reader_bad_fd(loop):
    with pytest.raises(ValueError):
        loop.add_reader(-1, print)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        loop.add_reader(r, print)


def test_regular_file_not_pollable(loop, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x")
    with open(p, "rb") as f:
        with pytest.raises(PermissionError):
            loop.add_reader(f.fileno(), print)


def test_callback_exception_goes_to_handler(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))

    def boom():
        raise ValueError("boom")

    out = []
    loop.call_soon(boom)
    loop.call_soon(out.append, "after")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["after"]
    assert isinstance(seen[0]["exception"], ValueError)
    assert seen[0]["message"].startswith("Exception in callback")
    assert isinstance(seen[0]["handle"], asyncio.Handle)


def test_keyboard_interrupt_propagates(loop):
    def ki():
        raise KeyboardInterrupt

    loop.call_soon(ki)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
    # the loop is still usable
    assert loop.run_until_complete(asyncio.sleep(0, 7)) == 7


def test_stop_semantics(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.call_soon(loop.stop)
    loop.call_soon(out.append, 2)  # same iteration: still runs
    loop.run_forever()
    assert out == [1, 2]
    loop.stop()  # stop before run: one iteration then return
    loop.call_soon(out.append, 3)
    loop.run_forever()
    assert out == [1, 2, 3]


def test_closed_loop_errors():
    lp = Loop()
    lp.close()
    lp.close()  # idempotent
    assert lp.is_closed()
    for call in (lambda: lp.call_soon(print), lambda: lp.call_later(1, print),
                 lambda: lp.call_at(1, print), lambda: lp.call_soon_threadsafe(print),
                 lambda: lp.run_forever(), lambda: lp.add_reader(0, print)):
        with pytest.raises(RuntimeError, match="closed"):
            call()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="closed"):
        lp.run_until_complete(coro)
    coro.close()
    assert lp.remove_reader(0) is False


def test_close_running_loop_refused(loop):
    err = []

    def try_close():
        try:
            loop.close()
        except RuntimeError as e:
            err.append(str(e))
        loop.stop()

    loop.call_soon(try_close)
    loop.run_forever()
    assert err == ["Cannot close a running event loop"]


def test_debug_wrong_thread(loop):
    loop.set_debug(True)

    async def main():
        errs = []

        def other():
            try:
                loop.call_soon(print)
            except RuntimeError as e:
                errs.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
        return errs

    errs = loop.run_until_complete(main())
    assert errs and "Non-thread-safe operation" in errs[0]


def test_debug_checks_callback(loop):
    loop.set_debug(True)

    async def coro():
        pass

    with pytest.raises(TypeError, match="coroutines cannot be used"):
        loop.call_soon(coro)
    with pytest.raises(TypeError):
        loop.call_later(1, 42)


def test_debug_slow_callback(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.03)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_forever()
    assert any("took" in r.getMessage() and "sleep" in r.getMessage() for r in caplog.records)


def test_signal_handler(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append(1), loop.stop()))
    loop.call_later(0.01, os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert got == [1]
    assert loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_from_thread_refused(loop):
    errs = []

    def other():
        try:
            loop.add_signal_handler(signal.SIGUSR2, print)
        except (RuntimeError, ValueError) as e:
            errs.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errs and isinstance(errs[0], (RuntimeError, ValueError))


def test_tasks_api():
    async def main():
        t = asyncio.current_task()
        assert t is not None and t in asyncio.all_tasks()
        async with asyncio.TaskGroup() as tg:
            ts = [tg.create_task(asyncio.sleep(0.001, i)) for i in range(10)]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        named = asyncio.get_running_loop().create_task(asyncio.sleep(0), name="nm")
        await named
        assert named.get_name() == "nm"
        return [x.result() for x in ts]

    assert cicada.loop.run(main()) == list(range(10))


async def _one():
    return 1


@pytest.mark.parametrize("call", [
    lambda lp: lp.create_task(coro=_one()),
    lambda lp: lp.create_task(coro=_one(), name="kw"),
    lambda lp: lp.create_task(_one(), name="n", context=contextvars.copy_context()),
])
def test_create_task_keywords_as_asyncio(call):
    """create_task(coro, *, name=None, context=None) takes coro as a keyword too, as asyncio's and
    uvloop's do; cicada's C fast path refused it ("takes one positional argument")."""
    for factory in (asyncio.new_event_loop, Loop):
        lp = factory()
        try:
            task = call(lp)
            assert lp.run_until_complete(task) == 1, factory
        finally:
            lp.close()


@pytest.mark.parametrize("call", [
    lambda lp, c: lp.create_task(),
    lambda lp, c: lp.create_task(c, c),
    lambda lp, c: lp.create_task(c, foo=1),
    lambda lp, c: lp.create_task(c, name="a", context=None, foo=1),
])
def test_create_task_bad_calls_fail_as_asyncio(call):
    """A malformed create_task() call fails with asyncio's own TypeError, message included."""
    errors = []
    for factory in (asyncio.new_event_loop, Loop):
        lp = factory()
        coro = _one()
        try:
            with pytest.raises(TypeError) as e:
                call(lp, coro)
            errors.append(str(e.value))
        finally:
            coro.close()
            lp.close()
    assert errors[0] == errors[1]


def test_runner_loop_factory_and_install():
    async def main():
        return type(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=cicada.loop.new_event_loop) as r:
        assert r.run(main()) is Loop
    old = asyncio.get_event_loop_policy()
    try:
        cicada.loop.install()
        assert asyncio.run(main()) is Loop
        lp = asyncio.new_event_loop()
        assert isinstance(lp, Loop)
        lp.close()
    finally:
        asyncio.set_event_loop_policy(old)


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="ASan's quarantine keeps freed memory resident: RSS is meaningless")
def test_no_leak_in_hot_paths():
    import resource

    lp = Loop()

    def cycle(n):
        async def one():
            await asyncio.sleep(0)

        async def main():
            for _ in range(n):
                lp.call_soon(lambda: None)
                lp.call_later(0, lambda: None).cancel()
                await lp.create_task(one())

        lp.run_until_complete(main())

    cycle(20000)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cycle(100000)
    gc.collect()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lp.close()
    assert after - before < 8 * 1024  # KiB: flat, not ~proportional to 100k iterations


def test_signals_drained_in_c(loop):
    assert Loop._read_from_self is _core.LoopCore._read_from_self
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, got.append, "usr2")

    def fire():
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)

    loop.call_soon(fire)
    loop.call_later(5, loop.stop)

    async def wait():
        while len(got) < 2:
            await asyncio.sleep(0.001)

    loop.run_until_complete(asyncio.wait_for(wait(), 5))
    assert sorted(got) == ["usr1", "usr2"]
    loop.remove_signal_handler(signal.SIGUSR1)
    loop.remove_signal_handler(signal.SIGUSR2)
    loop.close()
    assert signal.set_wakeup_fd(-1) == -1  # close() released the wake-up fd
