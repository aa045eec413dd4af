"""Differential test: cicada's event loop against asyncio's own (the plain SelectorEventLoop, the
reference), fed small programs of loop operations that hypothesis generates.

A program is a list of operations run before the loop starts; many operations carry a body (more
operations) that runs later: call_soon (also threadsafe, also in an empty context) / call_at /
call_later callbacks, future done callbacks,
and tasks whose steps await futures, sleeps, wait_for, shield, gather, asyncio.timeout_at and
other tasks. The operations cancel handles, resolve, cancel and query futures (with messages),
cancel tasks, raise from callbacks (the exception handler's context is recorded), call
loop.stop(), set a context variable, and read the loop's state. Each program runs once on each
loop; an interpreter records what the program can observe (which callback ran, in what order,
with what context value; every result and exception type and message; handle states and reprs;
what reached the exception handler; the errors of the closed loop), and the two traces must be
equal. Debug mode is on or off (asyncio's debug paths: handles made by their classes with a
source traceback, create_task through asyncio's code, the callback checks). The loop is driven
with run_forever or run_until_complete until an end timer fires; then the pending tasks are
cancelled until they finish, the loop is closed and its closed-state errors are recorded.

Time: timers aim at "ranks" STEP apart (a past rank, or the current rank plus 1..3), plus
uid * JITTER to make every deadline distinct. Before each rank a gate callback holds the loop
until every deadline of that rank has passed, so all of a rank's timers become ready in the same
iteration, in deadline order, whichever loop polls when. When the traces differ, both loops run
the program again (up to RERUNS times): a late wake-up on a busy machine can move a timer across
a rank, and does not repeat. cicada passes if one of its traces equals one of asyncio's; if
asyncio disagrees with itself and cicada matches none of its traces, the example is discarded.

Normalisations, each for something asyncio leaves unspecified:

- Timer deadlines are never equal (JITTER): asyncio's heapq does not order equal deadlines
  (TimerHandle has no sequence number), cicada fires them in FIFO order.
- Hex addresses (0x...) and TimerHandle's `when=` in reprs are masked: they are memory and
  clock values.
- Tasks are always named: default names ("Task-N") come from a process-wide counter.
- In debug mode, a future's repr, which ends with where it was created, is masked: asyncio's
  create_future is Python, so its futures point at asyncio's own line in base_events.py;
  cicada's is C, and its futures point at the caller. A diagnostic, not behaviour (handles and
  tasks agree, and are compared).
- The "exception was never retrieved" reports, which come from garbage collection after close,
  are compared as a sorted list: the order in which a cycle's objects are finalised is not
  specified.
- call_later's deadline is compared to the target within 1 ms (the loop reads the clock itself).
- Re-entrant runs (run_until_complete / run_forever inside a running loop) are not generated:
  asyncio refuses them and cicada nests them by design; test_nested_run_sync_invariants checks
  cicada's nested runs (cicada.run_sync inside callbacks) for lost or reordered callbacks.

TEST_LOOP_DIFF_EXAMPLES=N runs N examples instead of the CI default (e.g. 2000 to hunt);
TEST_LOOP_DIFF_SEED=S draws other examples than the derandomised CI ones (seeded by S);
TEST_LOOP_DIFF_STEP=seconds sets the rank spacing (default 0.012; raise it on a loaded machine).
"""

from __future__ import annotations

import asyncio
import contextvars
import fractions
import gc
import os
import re
import sys
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")
try:
    import uvloop  # a third opinion, named in a failure's notes
except ImportError:  # pragma: no cover - in the test extras
    uvloop = None

from hypothesis import given, note, seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import cicada  # noqa: E402
import cicada.loop  # noqa: E402
from support.hunt import hunt_settings  # noqa: E402

EXAMPLES, _settings, SEED = hunt_settings("TEST_LOOP_DIFF", 60)

STEP = float(os.environ.get("TEST_LOOP_DIFF_STEP", "0.012"))  # seconds between ranks
JITTER = 1e-5  # added per timer uid, so that no two deadlines are equal
SPREAD = 2e-3  # a gate holds the loop this long past its rank (> JITTER * timers)
GATE_LEAD = 1.5e-3  # a gate fires this long before its rank
NFUTURES = 3  # futures f0..f2 exist from the start
MAX_ROUNDS = 12  # run_forever/run_until_complete calls before the program must have ended
RERUNS = 3  # when the traces differ, runs of both loops again before it counts

VAR = contextvars.ContextVar("VAR", default="-")


class Boom(Exception):
    """The exception programs raise (from callbacks, tasks, set_exception)."""


# --- recording -------------------------------------------------------------------------------

_ADDR = re.compile(r"0x[0-9a-fA-F]+")
_WHEN = re.compile(r"when=[-0-9.e+]+")
# a future's repr in debug mode: it ends with where it was created (cut short by reprlib in a
# callback's repr: "<Future finis...events.py:427>")
_FUTURE_ORIGIN = re.compile(r"<Future [^<>]*?(created at \S+|\.\.\.[^<>\s]*\.py):\d+>")


def clean(text: str) -> str:
    text = _FUTURE_ORIGIN.sub("<Future created at ?>", text)
    return _WHEN.sub("when=?", _ADDR.sub("0x?", text))


def exc_summary(exc: BaseException) -> tuple:
    return (type(exc).__name__, clean(str(exc)))


def outcome(fn, *args, **kwargs) -> tuple:
    """('ok', value) or ('raise', type, message) for fn(*args, **kwargs)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - every exception is an observation
        return ("raise",) + exc_summary(exc)


# --- the interpreter -------------------------------------------------------------------------


class Interp:
    """Runs one program on one loop and records the trace."""

    def __init__(self, loop, program):
        self.loop = loop
        self.driver, self.debug, self.top, self.after_close = program
        self.trace: list = []
        self.handles: list = []  # every handle the program made, in order
        self.futures: list = []
        self.tasks: list = []
        self.labels: dict[int, str] = {}  # id(obj) -> label; the objects stay referenced
        self.keep: list = []
        self.uid = 0  # names callbacks
        self.tuid = 0  # makes deadlines distinct
        self.gated: set[int] = set()
        self.max_rank = 0
        self.ended = False
        self.closed = False
        self.late_reports: list = []

    # labels: the trace names objects, never shows them
    def label(self, obj, prefix):
        name = f"{prefix}{sum(1 for v in self.labels.values() if v.startswith(prefix))}"
        self.labels[id(obj)] = name
        self.keep.append(obj)
        return name

    def show(self, v):
        if isinstance(v, BaseException):
            return exc_summary(v)
        if isinstance(v, (list, tuple)):
            return [self.show(x) for x in v]
        if isinstance(v, (set, frozenset)):
            return sorted(str(self.show(x)) for x in v)
        if id(v) in self.labels:
            return self.labels[id(v)]
        if isinstance(v, asyncio.Handle):
            return "handle?"
        if isinstance(v, asyncio.Future):
            return "future?"
        return v if isinstance(v, (int, str, type(None), bool)) else clean(repr(v))

    def ev(self, *items):
        self.trace.append(tuple(self.show(i) if not isinstance(i, str) else i for i in items))

    # time
    def epoch(self) -> int:
        """The rank now: rank r's work runs from its gate on (r * STEP - GATE_LEAD); the
        operations before the loop starts are at rank 0, however long they take."""
        if not self.loop.is_running():
            return 0
        return int((self.loop.time() - self.start + GATE_LEAD) // STEP)

    def target(self, rel: int) -> tuple[int, float]:
        """(rank, deadline) for a relative rank: < 0 is an absolute past rank, > 0 ahead."""
        rank = rel if rel < 0 else self.epoch() + rel
        self.tuid += 1
        assert self.tuid * JITTER < SPREAD, "too many timers for JITTER and SPREAD"
        if rank > 0 and rank not in self.gated:
            self.gated.add(rank)
            self.loop.call_at(self.start + rank * STEP - GATE_LEAD, self.gate, rank)
        self.max_rank = max(self.max_rank, rank)
        return rank, self.start + rank * STEP + self.tuid * JITTER

    def gate(self, rank):
        until = self.start + rank * STEP + SPREAD
        while time.monotonic() < until:
            pass

    # the exception handler
    def handler(self, loop, context):
        keys = sorted(context)
        exc = context.get("exception")
        item = ("handler", clean(context.get("message", "")), keys,
                exc_summary(exc) if exc is not None else None,
                self.show(context.get("handle")) if "handle" in context else None,
                self.show(context.get("future", context.get("task"))))
        if self.closed:
            self.late_reports.append(item)
        else:
            self.trace.append(item)

    # running
    def run(self):
        loop = self.loop
        loop.set_exception_handler(self.handler)
        loop.set_debug(self.debug)
        loop.slow_callback_duration = 10.0  # debug mode's slow-callback log is not compared
        loop.call_later(1, print).cancel()  # first uses (debug mode: linecache) are slow: not here
        loop.create_future().cancel()
        self.start = loop.time()
        self.ev("time-monotonic", abs(self.start - time.monotonic()) < 0.5)
        for _ in range(NFUTURES):
            f = loop.create_future()
            self.label(f, "f")
            self.futures.append(f)
        self.final = loop.create_future()
        self.label(self.final, "final")
        self.body(self.top, "top")
        self.schedule_end()
        for i in range(MAX_ROUNDS):
            self.ev("run", i, loop.is_running())
            if self.driver == "until":
                self.ev("returned", outcome(loop.run_until_complete, self.final))
            else:
                self.ev("returned", outcome(loop.run_forever))
            self.ev("after-run", loop.is_running(), loop.is_closed())
            if self.ended:
                break
        self.finish()
        return self.trace

    def schedule_end(self):
        """The end comes after the last rank a timer aims at (SPREAD: after its jitter too)."""
        rank = max(self.max_rank, self.epoch()) + 1
        self.loop.call_at(self.start + rank * STEP + SPREAD, self.end)

    def end(self):
        if self.max_rank >= self.epoch():  # timers were set meanwhile: wait for them
            return self.schedule_end()
        self.ended = True
        self.ev("end")
        if self.driver == "until":
            self.final.set_result("end")  # run_until_complete stops the loop
        else:
            self.loop.stop()

    def finish(self):
        loop = self.loop
        for f in self.futures:
            self.ev("final-future", self.labels[id(f)], *self.fut_state(f))
        for _ in range(10):  # at least once: callbacks the end left in the ready queue run
            pending = [t for t in self.tasks if not t.done()]
            for t in pending:
                self.ev("cleanup-cancel", t.get_name(), t.cancel())
            self.ev("cleanup-run", outcome(loop.run_until_complete, self.settle()))
            if not pending:
                break
        for t in self.tasks:
            self.ev("final-task", t.get_name(), *self.fut_state(t))
        self.ev("all-tasks", len(asyncio.all_tasks(loop)))
        self.ev("close", outcome(loop.close), loop.is_closed(), loop.is_running())
        self.closed = True
        self.ev("close-again", outcome(loop.close))
        self.closed_errors()
        self.body(self.after_close, "after-close")
        # what reaches the handler when the loop's objects are finalised
        self.keep.clear()
        self.futures.clear()
        self.tasks.clear()
        self.handles.clear()
        self.final = None
        gc.collect()
        self.trace.append(("late-reports", sorted(map(str, self.late_reports))))

    async def settle(self):
        for _ in range(4):
            await asyncio.sleep(0)

    def closed_errors(self):
        loop = self.loop
        noop = print
        self.ev("closed", "call_soon", outcome(loop.call_soon, noop))
        self.ev("closed", "call_later", outcome(loop.call_later, 1, noop))
        self.ev("closed", "call_at", outcome(loop.call_at, 1, noop))
        self.ev("closed", "call_soon_threadsafe", outcome(loop.call_soon_threadsafe, noop))
        self.ev("closed", "run_forever", outcome(loop.run_forever))
        for name in ("run_until_complete", "create_task"):
            coro = self.settle()
            self.ev("closed", name, outcome(getattr(loop, name), coro))
            coro.close()
        fut = loop.create_future()
        self.ev("closed", "run_until_complete(future)", outcome(loop.run_until_complete, fut))
        self.ev("closed", "stop", outcome(loop.stop), "time", type(loop.time()).__name__)
        self.ev("closed", "is_running", loop.is_running(), loop.get_debug())

    # future helpers
    def fut_state(self, f):
        return (f.done(), f.cancelled(), outcome(f.result), outcome(f.exception))

    def fut(self, ref):
        return self.futures[ref % len(self.futures)]

    def task(self, ref):
        return self.tasks[ref % len(self.tasks)] if self.tasks else None

    # bodies
    def body(self, ops, where):
        for op in ops:
            self.op(op, where)

    def callback(self, name, ops):
        self.ev("cb", name, VAR.get(), self.loop.is_running())
        self.body(ops, name)

    def schedule(self, h, name, extra=()):
        self.label(h, "h")
        self.handles.append(h)
        self.ev("scheduled", name, self.labels[id(h)], type(h).__name__, h.cancelled(),
                clean(repr(h)), *extra)

    def op(self, op, where):  # noqa: C901 - one branch per operation, kept flat on purpose
        loop = self.loop
        kind = op[0]
        if kind in ("soon", "soon_threadsafe", "soon_empty_context"):
            # call_soon, call_soon_threadsafe (from this thread), call_soon in a new, empty context
            name = f"c{self.uid}"
            self.uid += 1
            if kind == "soon":
                h = loop.call_soon(self.callback, name, op[1])
            elif kind == "soon_threadsafe":
                h = loop.call_soon_threadsafe(self.callback, name, op[1])
            else:
                h = loop.call_soon(self.callback, name, op[1], context=contextvars.Context())
            self.schedule(h, name)
        elif kind == "at":
            rank, when = self.target(op[1])
            name = f"a{self.tuid}@{rank}"
            h = loop.call_at(when, self.callback, name, op[2])
            self.schedule(h, name, (h.when() == when,))
        elif kind == "later":
            rank, when = self.target(op[1])
            name = f"l{self.tuid}@{rank}"
            h = loop.call_later(when - loop.time(), self.callback, name, op[2])
            self.schedule(h, name, (abs(h.when() - when) < 1e-3,))
        elif kind == "cancel":
            if not self.handles:
                return self.ev("cancel", None)
            h = self.handles[op[1] % len(self.handles)]
            before = h.cancelled()
            h.cancel()
            self.ev("cancel", self.labels[id(h)], before, h.cancelled(), clean(repr(h)))
        elif kind == "raise":
            self.ev("raise", where, op[1])
            raise make_exc(op[1], where)
        elif kind == "stop":
            self.ev("stop", where, loop.is_running())
            loop.stop()
        elif kind == "setvar":
            VAR.set(op[1])
        elif kind == "query":
            t = asyncio.current_task(loop) if loop.is_running() else None
            self.ev("query", where, loop.is_running(), loop.is_closed(),
                    t.get_name() if t is not None else None,
                    len(asyncio.all_tasks(loop)) if loop.is_running() else None)
        elif kind == "fut_result":
            self.ev("set_result", self.show(self.fut(op[1])),
                    outcome(self.fut(op[1]).set_result, op[2]))
        elif kind == "fut_exc":
            self.ev("set_exception", self.show(self.fut(op[1])),
                    outcome(self.fut(op[1]).set_exception, make_exc(op[2], where)))
        elif kind == "fut_cancel":
            f = self.fut(op[1])
            args = () if op[2] is None else (op[2],)
            self.ev("cancel-future", self.show(f), outcome(f.cancel, *args))
        elif kind == "fut_query":
            f = self.fut(op[1])
            self.ev("future", self.show(f), *self.fut_state(f))
        elif kind == "fut_add_cb":
            f = self.fut(op[1])
            name = f"d{self.uid}"
            self.uid += 1
            cb = DoneCallback(self, name, op[2])
            self.keep.append(cb)
            self.ev("add_done_callback", self.show(f), name, outcome(f.add_done_callback, cb))
        elif kind == "fut_remove_cb":
            f = self.fut(op[1])
            cbs = [c for c in self.keep if isinstance(c, DoneCallback)]
            if not cbs:
                return self.ev("remove_done_callback", None)
            cb = cbs[op[2] % len(cbs)]
            self.ev("remove_done_callback", self.show(f), cb.name,
                    outcome(f.remove_done_callback, cb))
        elif kind == "task":
            name = f"t{len(self.tasks)}"
            r = outcome(loop.create_task, self.coro(name, op[1]), name=name)
            if r[0] == "ok":
                self.label(r[1], "t")
                self.tasks.append(r[1])
                r = ("ok", r[1].get_name(), r[1].done())
            self.ev("create_task", name, r)
        elif kind == "nested":
            name = f"n{self.uid}"
            self.uid += 1
            self.ev("nested-start", name, where)
            self.ev("nested-end", name, outcome(cicada.run_sync, self.coro(name, op[1])))
        elif kind == "task_cancel":
            t = self.task(op[1])
            if t is None:
                return self.ev("task-cancel", None)
            args = () if op[2] is None else (op[2],)
            self.ev("task-cancel", t.get_name(), outcome(t.cancel, *args), t.cancelling())
        elif kind == "task_query":
            t = self.task(op[1])
            if t is None:
                return self.ev("task", None)
            self.ev("task", t.get_name(), *self.fut_state(t), t.cancelling())
        else:
            raise AssertionError(f"unknown operation {op!r}")

    # tasks
    async def coro(self, name, steps):
        self.ev("task-start", name, VAR.get())
        for i, step in enumerate(steps):
            if step[0] not in AWAITS:
                self.op(step, name)
                continue
            catch = step[-1]
            try:
                r = await self.awaitable(step)
                self.ev("awaited", name, i, step[0], "ok", r)
            except GeneratorExit:
                raise
            except BaseException as exc:  # noqa: BLE001
                me = asyncio.current_task(self.loop)
                self.ev("awaited", name, i, step[0], "raise", exc_summary(exc),
                        me.cancelling() if me else None)
                if not catch or isinstance(exc, (SystemExit, KeyboardInterrupt)):
                    raise
                if isinstance(exc, asyncio.CancelledError) and catch == "uncancel":
                    self.ev("uncancel", name, me.uncancel())
        self.ev("task-end", name, VAR.get())
        return f"{name}-done"

    async def awaitable(self, step):
        loop = self.loop
        kind = step[0]
        if kind == "await_fut":
            return self.show(await self.fut(step[1]))
        if kind == "sleep0":
            return await asyncio.sleep(0, "slept0")
        if kind == "sleep":
            rank, when = self.target(step[1])
            return await asyncio.sleep(when - loop.time(), f"slept@{rank}")
        if kind == "wait_for":
            rank, when = self.target(step[2])
            return self.show(await asyncio.wait_for(self.fut(step[1]), when - loop.time()))
        if kind == "shield":
            return self.show(await asyncio.shield(self.fut(step[1])))
        if kind == "timeout_at":
            rank, when = self.target(step[2])
            async with asyncio.timeout_at(when) as cm:
                try:
                    return self.show(await self.fut(step[1]))
                finally:
                    self.ev("timeout-cm", cm.expired(), cm.when() == when)
        if kind == "gather":
            aws = [self.fut(r) for r in step[1]]
            return self.show(await asyncio.gather(*aws, return_exceptions=step[2]))
        if kind == "await_task":
            t = self.task(step[1])
            if t is None or t is asyncio.current_task():
                return "no-task"
            return self.show(await t)
        if kind == "wait":
            rank, when = self.target(step[2])
            done, pending = await asyncio.wait([self.fut(r) for r in step[1]],
                                               timeout=when - loop.time(),
                                               return_when=step[3])
            return [self.show(done), self.show(pending)]
        raise AssertionError(f"unknown await {step!r}")


class DoneCallback:
    """A future's done callback: records which future finished and runs its body."""

    def __init__(self, interp, name, ops):
        self.interp, self.name, self.ops = interp, name, ops

    def __call__(self, fut):
        self.interp.ev("done-cb", self.name, self.interp.show(fut), VAR.get())
        self.interp.body(self.ops, self.name)

    def __repr__(self):
        return f"<DoneCallback {self.name}>"


def make_exc(kind, where):
    if kind == "Boom":
        return Boom(f"boom in {where}")
    if kind == "CancelledError":
        return asyncio.CancelledError(f"cancelled in {where}")
    if kind == "KeyboardInterrupt":
        return KeyboardInterrupt(where)
    if kind == "SystemExit":
        return SystemExit(where)
    if kind == "StopIteration":
        return StopIteration(where)
    raise AssertionError(kind)


AWAITS = {"await_fut", "sleep0", "sleep", "wait_for", "shield", "timeout_at", "gather",
          "await_task", "wait"}


# --- programs --------------------------------------------------------------------------------

REL = st.sampled_from([-3, -2, -1, 1, 2, 3])
AHEAD = st.integers(1, 3)
REF = st.integers(0, 7)
VALUE = st.sampled_from([0, 1, "x", None])
MSG = st.sampled_from([None, "why", ""])
EXC = st.sampled_from(["Boom", "Boom", "CancelledError", "StopIteration"])
RAISE = st.sampled_from(["Boom", "Boom", "CancelledError", "KeyboardInterrupt", "SystemExit"])
CATCH = st.sampled_from([False, True, "uncancel"])


def one_op(depth: int, nested: bool = False):
    """One operation that is not an await; bodies nest `depth` more levels. With `nested`,
    cicada.run_sync(a coroutine) is one of them (cicada only)."""
    leaf = [
        st.tuples(st.just("cancel"), REF),
        st.tuples(st.just("stop")),
        st.tuples(st.just("setvar"), st.sampled_from(["a", "b"])),
        st.tuples(st.just("query")),
        st.tuples(st.just("fut_result"), REF, VALUE),
        st.tuples(st.just("fut_exc"), REF, EXC),
        st.tuples(st.just("fut_cancel"), REF, MSG),
        st.tuples(st.just("fut_query"), REF),
        st.tuples(st.just("fut_remove_cb"), REF, REF),
        st.tuples(st.just("task_cancel"), REF, MSG),
        st.tuples(st.just("task_query"), REF),
    ]
    if depth > 0:
        sub = callback_body(depth - 1, nested)
        leaf += [
            st.tuples(st.just("soon"), sub),
            st.tuples(st.just("soon"), sub),
            st.tuples(st.sampled_from(["soon_threadsafe", "soon_empty_context"]), sub),
            st.tuples(st.just("at"), REL, sub),
            st.tuples(st.just("later"), AHEAD, sub),
            st.tuples(st.just("fut_add_cb"), REF, sub),
            st.tuples(st.just("task"), task_steps(depth - 1, nested)),
        ]
        if nested:  # twice: the test of nested runs is about them
            leaf += [st.tuples(st.just("nested"), nested_steps(depth - 1))] * 2
    return st.one_of(leaf)


def callback_body(depth: int, nested: bool = False):
    """A callback's operations; it may end by raising."""
    return st.tuples(st.lists(one_op(depth, nested), max_size=4),
                     st.one_of(st.just([]), RAISE.map(lambda k: [("raise", k)]))).map(
        lambda b: b[0] + b[1])


def task_steps(depth: int, nested: bool = False):
    """A task's steps: awaits and operations; it may end by raising."""
    awaits = st.one_of(
        st.tuples(st.just("await_fut"), REF, CATCH),
        st.tuples(st.just("sleep0"), CATCH),
        st.tuples(st.just("sleep"), AHEAD, CATCH),
        st.tuples(st.just("wait_for"), REF, AHEAD, CATCH),
        st.tuples(st.just("shield"), REF, CATCH),
        st.tuples(st.just("timeout_at"), REF, AHEAD, CATCH),
        st.tuples(st.just("gather"), st.lists(REF, min_size=1, max_size=3), st.booleans(), CATCH),
        st.tuples(st.just("await_task"), REF, CATCH),
        st.tuples(st.just("wait"), st.lists(REF, min_size=1, max_size=3), AHEAD,
                  st.sampled_from([asyncio.ALL_COMPLETED, asyncio.FIRST_COMPLETED,
                                   asyncio.FIRST_EXCEPTION]), CATCH),
    )
    return st.tuples(st.lists(st.one_of(awaits, awaits, one_op(depth, nested)), max_size=5),
                     st.one_of(st.just([]), st.just([]), RAISE.map(lambda k: [("raise", k)]))).map(
        lambda b: b[0] + b[1])


def nested_steps(depth: int):
    """Steps of a coroutine run by cicada.run_sync: its awaits always end (a timeout or a timer),
    since the callback that runs it waits for it."""
    awaits = st.one_of(
        st.tuples(st.just("sleep0"), CATCH),
        st.tuples(st.just("sleep"), AHEAD, CATCH),
        st.tuples(st.just("wait_for"), REF, AHEAD, CATCH),
        st.tuples(st.just("timeout_at"), REF, AHEAD, CATCH),
    )
    return st.lists(st.one_of(awaits, one_op(depth, nested=True)), max_size=4)


def programs(nested: bool = False):
    after_close = st.lists(st.one_of(
        st.tuples(st.just("fut_result"), REF, VALUE),
        st.tuples(st.just("fut_cancel"), REF, MSG),
        st.tuples(st.just("fut_query"), REF),
        st.tuples(st.just("task_cancel"), REF, MSG),
        st.tuples(st.just("task_query"), REF)), max_size=3)
    return st.tuples(st.sampled_from(["forever", "until"]), st.booleans(),
                     st.lists(one_op(2, nested), min_size=1, max_size=6), after_close)


# --- running both ----------------------------------------------------------------------------


def trace_of(factory, program):
    loop = factory()
    try:
        return Interp(loop, program).run()
    finally:
        if not loop.is_closed():
            loop.close()
        asyncio.set_event_loop(None)


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i, x, y
    return min(len(a), len(b)), a[len(b):len(b) + 1], b[len(a):len(a) + 1]


@pytest.mark.timeout(max(120, EXAMPLES))
@_settings
@seed(int(SEED or 0))  # ignored when derandomised
@given(programs())
def test_differential(program):
    note(f"program: {program!r}")
    ref = trace_of(asyncio.new_event_loop, program)
    got = trace_of(cicada.loop.new_event_loop, program)
    if got == ref:
        return
    # Run both again: a timing accident (a late wake-up moving a timer across a rank) does not
    # repeat, and shows as asyncio disagreeing with itself.
    refs, gots = [ref], [got]
    for _ in range(RERUNS):
        refs.append(trace_of(asyncio.new_event_loop, program))
        gots.append(trace_of(cicada.loop.new_event_loop, program))
        if any(g in refs for g in gots):
            return
    # asyncio not stable and cicada matched none of its traces: discard
    hypothesis.assume(all(r == ref for r in refs))
    i, want, have = first_difference(ref, got)
    note(f"asyncio trace: {ref!r}")
    note(f"cicada trace:  {got!r}")
    if uvloop is not None:
        same = trace_of(uvloop.new_event_loop, program) == ref
        note(f"uvloop's trace is {'asyncio' if same else 'neither'}'s")
    assert have == want, f"traces differ at event {i}"


def check_nested_invariants(interp, trace):
    """What a nested run must keep: every callback runs at most once, call_soon callbacks run in
    the order they were scheduled, every handle that was neither cancelled nor dropped by close()
    ran, and each cicada.run_sync call returned what its coroutine did."""
    ran = [e[1] for e in trace if e[0] == "cb"]
    assert len(ran) == len(set(ran)), f"a callback ran twice: {ran}"
    soon = [int(n[1:]) for n in ran if n.startswith("c")]
    assert soon == sorted(soon), f"call_soon callbacks out of order: {soon}"
    for name, cancelled in interp.leftover:
        assert cancelled or name in ran, f"{name} neither ran nor was cancelled"
    returned = {e[1]: (i, e[2]) for i, e in enumerate(trace) if e[0] == "nested-end"}
    started = [e[1] for e in trace if e[0] == "nested-start"]
    assert sorted(returned) == sorted(started), "a nested run did not return"
    ended = {e[1]: i for i, e in enumerate(trace) if e[0] == "task-end"}
    for name, (i, r) in returned.items():
        if r[0] == "raise" and r[1] in ("KeyboardInterrupt", "SystemExit"):
            continue  # raised by another callback of the nested run: it passes through
        # run_sync returns the value of a coroutine that ran to its end, else raises its error
        if ended.get(name, len(trace)) < i:
            assert r == ["ok", f"{name}-done"], (name, r)
        else:
            assert r[0] == "raise", (name, r)


class NestedInterp(Interp):
    """The interpreter, noting before close which scheduled callbacks were cancelled."""

    def end(self):
        super().end()
        if self.ended:
            self.scheduled_by_end = len(self.named_handles)

    def finish(self):
        # callbacks scheduled before the end have all had their turn; later ones may be pending
        self.leftover = [(n, h.cancelled()) for n, h in self.named_handles[:self.scheduled_by_end]]
        super().finish()

    def schedule(self, h, name, extra=()):
        self.named_handles.append((name, h))
        super().schedule(h, name, extra)

    def run(self):
        self.named_handles = []
        self.scheduled_by_end = 0
        return super().run()


@pytest.mark.timeout(max(120, EXAMPLES))
@_settings
@seed(int(SEED or 0))  # ignored when derandomised
@given(programs(nested=True))
def test_nested_run_sync_invariants(program):
    note(f"program: {program!r}")
    loop = cicada.loop.new_event_loop()
    interp = NestedInterp(loop, program)
    try:
        trace = interp.run()
    finally:
        if not loop.is_closed():
            loop.close()
        asyncio.set_event_loop(None)
    note(f"trace: {trace!r}")
    check_nested_invariants(interp, trace)


# --- single calls at the edges of the API ----------------------------------------------------


async def _coro():
    return "coro"


def _run_one(loop, schedule):
    """Schedule with `schedule(loop)`, run an iteration or two, and return what was scheduled
    (summarised), what ran and what reached the exception handler."""
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(
        (clean(ctx["message"]), exc_summary(ctx["exception"]) if "exception" in ctx else None)))
    r = outcome(schedule, loop)
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    return r[:1] + tuple(clean(repr(x)) for x in r[1:]), seen


EDGE_CASES = {
    "call_soon(not callable)": lambda lp: lp.call_soon(42),
    "call_soon(cb, context=not a context)": lambda lp: lp.call_soon(print, context=42),
    "call_soon(cb, context=None)": lambda lp: lp.call_soon(print, "", context=None),
    "call_at(int).when()": lambda lp: lp.call_at(5, print).when(),
    "call_at(bool).when()": lambda lp: lp.call_at(True, print).when(),
    "call_at(Fraction).when()": lambda lp: lp.call_at(fractions.Fraction(1, 3), print).when(),
    "call_at(inf).when()": lambda lp: lp.call_at(float("inf"), print).when(),
    "call_at(-inf) runs": lambda lp: lp.call_at(float("-inf"), print, "-inf").when(),
    "call_later(inf).when()": lambda lp: lp.call_later(float("inf"), print).when(),
    "call_later(nan).when()": lambda lp: str(lp.call_later(float("nan"), print, "nan").when()),
    "call_later(None)": lambda lp: lp.call_later(None, print),
    "call_at(None)": lambda lp: lp.call_at(None, print),
    "call_later(huge int)": lambda lp: lp.call_later(10 ** 400, print),
    "timer ordering": lambda lp: (lp.call_at(1, print) < lp.call_at(2, print),
                                  lp.call_at(1, print) == lp.call_at(1, print)),
    "create_task(name=int)": lambda lp: lp.create_task(_coro(), name=5).get_name(),
    "create_task(not a coroutine)": lambda lp: lp.create_task(42),
    "create_task(coro=...)": lambda lp: lp.create_task(coro=_coro()).get_name() != "",
    "create_future().get_loop()": lambda lp: lp.create_future().get_loop() is lp,
    "run_until_complete(not awaitable)": lambda lp: lp.run_until_complete(42),
    "set_exception_handler(not callable)": lambda lp: lp.set_exception_handler(42),
    "stop() twice": lambda lp: (lp.stop(), lp.stop()),
}


@pytest.mark.timeout(30)  # a deadline the loop cannot handle used to hang it (call_later(nan))
@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_api_edge_case_as_asyncio(name):
    """One call at the edge of the API (odd deadlines, odd callbacks, odd arguments): cicada
    returns, raises and reports to the exception handler what asyncio does."""
    if "nan" in name and sys.version_info >= (3, 13):
        # 3.13's own loop fails on a NaN timer (selectors: "cannot convert float NaN to
        # integer"), so there is no asyncio behaviour to match; test_core.py has cicada's.
        pytest.skip("asyncio 3.13 itself fails on a NaN deadline")
    results = []
    for factory in (asyncio.new_event_loop, cicada.loop.new_event_loop):
        loop = factory()
        try:
            results.append(_run_one(loop, EDGE_CASES[name]))
        finally:
            loop.close()
    assert results[1] == results[0]
