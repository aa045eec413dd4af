"""cicada's asyncio event loop.

`Loop` is an `asyncio.AbstractEventLoop`. Its hot core is C (`cicada._core.LoopCore`): call_soon,
call_soon_threadsafe, call_later/call_at, create_task, the ready queue, the timer heap, epoll
polling, add/remove reader/writer, sock_recv/sock_recv_into/sock_sendall/sock_accept, time(),
get_debug(), stop() and the iteration itself. The rarely-hot rest of the API (sock_connect,
servers, transports, subprocesses, signals, executors, TLS)
is inherited from asyncio's Unix selector loop, whose transports run on the C poller through
`_add_reader`/`_add_writer`.

Unlike asyncio and uvloop, the loop is re-entrant by default: `run_until_complete()` called
while the loop (or another loop in this thread) is running runs it nested until the future is
done. `Loop(nested=False)` or `CICADA_NESTED=0` restores asyncio's RuntimeErrors.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import sys
import threading
import types
from asyncio import constants, events, format_helpers, futures, selector_events, tasks, unix_events
from asyncio.log import logger

from cicada import _core

__all__ = ["Loop", "EventLoopPolicy", "new_event_loop", "run", "install"]


def _nested_default() -> bool:
    return os.environ.get("CICADA_NESTED", "1").strip().lower() not in ("0", "false", "no", "off")


_enter_task = tasks._enter_task
_leave_task = tasks._leave_task
_current_task = tasks.current_task
_get_ident = threading.get_ident
_CoroutineType = types.CoroutineType
_Future = futures.Future
_Socket = socket.socket
_BaseSelector = selector_events.BaseSelectorEventLoop


def _retrieve(future, new_task):
    # A task we made for an exception that escapes us: its own exception is reported here
    # or not at all, never as "exception was never retrieved".
    if new_task and future.done() and not future.cancelled():
        future.exception()


def _result(future):
    if not future.done():
        raise RuntimeError("Event loop stopped before Future completed.")
    return future.result()


class _SelectorView:
    """Read-only stand-in for `loop._selector`: asyncio's transports look at it in __repr__ only.
    The real poller is the C core; registering through this view is not supported."""

    def __init__(self, loop: "Loop") -> None:
        self._loop = loop

    def get_key(self, fileobj):
        info = self._loop._cc_fd_info(fileobj)
        if info is None:
            raise KeyError(f"{fileobj!r} is not registered")
        mask, reader, writer = info
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return selectors.SelectorKey(fileobj, fd, mask, (reader, writer))

    def get_map(self):
        return {fd: self.get_key(fd) for fd in self._loop._cc_fds()}

    def close(self) -> None:
        pass


def _c_transport_default() -> bool:
    return os.environ.get("CICADA_C_TRANSPORT", "1").strip().lower() not in ("0", "false", "no")


_STREAM_FAMILIES = {socket.AF_INET, socket.AF_INET6, socket.AF_UNIX}

# The transport feeds asyncio's own StreamReader directly (loop/transport.c, read_stream);
# CICADA_STREAM_FAST=0 turns that off, for side-by-side measurements.
if os.environ.get("CICADA_STREAM_FAST", "1").strip().lower() in ("0", "false", "no", "off"):
    _core._set_stream_fast_path(False)


class _SocketTransport(_core.transport_core_type(), selector_events._SelectorSocketTransport):
    """Stream socket transport: reads and writes in C (SocketTransportCore), everything else is
    asyncio's own _SelectorSocketTransport code running over the C state."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # 3.12+ picks a Python write path per instance (self._write_ready = ...); ours is C.
        self.__dict__.pop("_write_ready", None)

    def close(self):
        lost = self._conn_lost
        try:
            super().close()
        except BaseException:
            # asyncio's close() marks the transport closing and counts the connection lost
            # before it schedules _call_connection_lost; when that fails (a MemoryError from
            # call_soon or _remove_writer), nothing would ever close the socket, and abort()
            # could not either: _force_close returns at once when _conn_lost is set. Undo the
            # count, so that the abort() a caller falls back to (asgi/protocol.c:
            # close_transport) ends the connection.
            self._conn_lost = lost
            raise

    def _cc_warn_send_after_lost(self):
        logger.warning("socket.send() raised exception.")

    def _read_ready__data_received(self):  # asyncio's name for the same thing
        self._read_ready()

    _read_ready__get_buffer = _read_ready__data_received


class Loop(_core.LoopCore, unix_events._UnixSelectorEventLoop):
    """asyncio event loop with a C core; re-entrant unless created with nested=False."""

    def __init__(self, *, nested: bool | None = None) -> None:
        self._nested = _nested_default() if nested is None else bool(nested)
        self._c_transport = _c_transport_default()
        super().__init__(_SelectorView(self))

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        if self._c_transport and sock.family in _STREAM_FAMILIES and sock.type == socket.SOCK_STREAM:
            return _SocketTransport(self, sock, protocol, waiter, extra, server)
        return super()._make_socket_transport(sock, protocol, waiter, extra=extra, server=server)

    # -- sock_* in C (loop/sock.c): tried at once, else parked until epoll reports the fd -----
    # The C call returns the result, or the future to await when the socket would block. Only
    # plain socket.socket objects take it: a subclass may override recv/send (SSLSocket does,
    # and asyncio refuses it), so any other type gets asyncio's code, which calls its methods.
    async def sock_recv(self, sock, n):
        if type(sock) is not _Socket:
            return await _BaseSelector.sock_recv(self, sock, n)
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        r = self._cc_sock_recv(sock, n)
        return (await r) if type(r) is _Future else r

    async def sock_recv_into(self, sock, buf):
        if type(sock) is not _Socket:
            return await _BaseSelector.sock_recv_into(self, sock, buf)
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        r = self._cc_sock_recv_into(sock, buf)
        return (await r) if type(r) is _Future else r

    async def sock_sendall(self, sock, data):
        if type(sock) is not _Socket:
            return await _BaseSelector.sock_sendall(self, sock, data)
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        r = self._cc_sock_sendall(sock, data)
        if type(r) is _Future:
            await r

    async def sock_accept(self, sock):
        if type(sock) is not _Socket:
            return await _BaseSelector.sock_accept(self, sock)
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        r = self._cc_sock_accept(sock)
        return (await r) if type(r) is _Future else r

    # -- the self-pipe signal.set_wakeup_fd writes to is drained in C (loop/signals.c) ---------
    def _make_self_pipe(self):
        super()._make_self_pipe()
        self._cc_set_signal_fd(self._ssock.fileno())

    def _close_self_pipe(self):
        self._cc_set_signal_fd(-1)
        super()._close_self_pipe()

    # -- create_task: the C fast path falls back here for task factories, debug mode and any
    # call it does not take; asyncio's own function, so that its argument errors are asyncio's.
    _cc_create_task_py = unix_events._UnixSelectorEventLoop.create_task

    # -- hooks called by the C core ---------------------------------------------------------
    def _cc_callback_error(self, handle, exc):
        # 3.13's Handle._run shows the callback's arguments only in debug mode
        kw = {"debug": self.get_debug()} if sys.version_info >= (3, 13) else {}
        cb = format_helpers._format_callback_source(handle._callback, handle._args, **kw)
        context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
        self.call_exception_handler(context)

    def _cc_slow_callback(self, handle, dt):
        from asyncio.log import logger

        logger.warning("Executing %s took %.3f seconds", asyncio.base_events._format_handle(handle), dt)

    def _process_events(self, event_list):  # pragma: no cover - the C core dispatches events
        raise RuntimeError("cicada's loop dispatches I/O events in C")

    # -- lifecycle --------------------------------------------------------------------------
    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        try:
            super().close()
        finally:
            self._cc_close()

    def __repr__(self):
        return (f"<{type(self).__name__} running={self.is_running()} "
                f"closed={self.is_closed()} debug={self.get_debug()} nested={self._nested}>")

    def _refuse_if_strict(self):
        if self.is_running() and self._thread_id != threading.get_ident():
            # Nesting is a same-thread affair: another thread must not drive a running loop.
            raise RuntimeError("This event loop is already running")
        if self._nested:
            return
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def run_forever(self):
        self._check_closed()
        self._refuse_if_strict()
        if self.is_running():
            # Nested run_forever on the running loop: iterate until stop().
            with _leave_current_task(self):
                self._cc_run_forever()
            return
        with self._running(events._get_running_loop()):
            self._cc_run_forever()

    def run_until_complete(self, future):
        self._check_closed()
        if self.is_running():
            return self._run_nested(future)
        outer = events._get_running_loop()
        if outer is None:
            # The ordinary, top-level case: asyncio's own logic over our run_forever.
            return super().run_until_complete(future)
        self._refuse_if_strict()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            future._log_destroy_pending = False
        try:
            with self._running(outer):
                self._cc_run_until(future)
        except BaseException:
            _retrieve(future, new_task)
            raise
        return _result(future)

    def _run_nested(self, future):
        """run_until_complete on this loop while it runs (this thread): iterate it in place.
        Kept lean: sync code calling async code in a hot path pays this on every call."""
        if not self._nested or self._thread_id != _get_ident():
            self._refuse_if_strict()
        new_task = type(future) is _CoroutineType
        if new_task:
            future = self.create_task(future)
            future._log_destroy_pending = False
        else:
            new_task = not futures.isfuture(future)
            future = tasks.ensure_future(future, loop=self)
            if new_task:
                future._log_destroy_pending = False
        # The caller's task is not current while the nested run steps other tasks.
        task = _current_task(self)
        if task is not None:
            _leave_task(self, task)
        try:
            self._cc_run_until(future)
        except BaseException:
            _retrieve(future, new_task)
            raise
        finally:
            if task is not None:
                _enter_task(self, task)
        return _result(future)

    def _running(self, outer):
        return _RunningScope(self, outer)


class _leave_current_task:
    """While a loop runs nested, the task that called it is not the current task (the tasks the
    nested run steps must be able to enter); it becomes current again afterwards."""

    __slots__ = ("loop", "task")

    def __init__(self, loop):
        self.loop = loop
        self.task = None

    def __enter__(self):
        if self.loop is not None:
            self.task = tasks.current_task(self.loop)
            if self.task is not None:
                _leave_task(self.loop, self.task)
        return self

    def __exit__(self, *exc):
        if self.task is not None:
            _enter_task(self.loop, self.task)
        return False


class _RunningScope:
    """Make `loop` the running loop of this thread for a while, like BaseEventLoop.run_forever,
    and put back whatever loop (possibly another one, running further up the stack) was there."""

    def __init__(self, loop, outer):
        self.loop = loop
        self.outer = outer
        self.leave = _leave_current_task(outer)

    def __enter__(self):
        loop = self.loop
        self.hooks = sys.get_asyncgen_hooks()
        self.leave.__enter__()
        try:
            loop._set_coroutine_origin_tracking(loop._debug)
            loop._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=loop._asyncgen_firstiter_hook,
                                   finalizer=loop._asyncgen_finalizer_hook)
            events._set_running_loop(loop)
        except BaseException:
            # `with` calls no __exit__ for a failed __enter__ (a MemoryError): undo what was
            # done, or the loop would look as if it were running for good
            self.__exit__()
            raise

    def __exit__(self, *exc):
        loop = self.loop
        try:
            loop._stopping = False
            loop._thread_id = None
            events._set_running_loop(self.outer)
            loop._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*self.hooks)
        finally:
            self.leave.__exit__()
        return False


class EventLoopPolicy(unix_events.DefaultEventLoopPolicy):
    """Event loop policy whose new_event_loop() returns cicada's Loop."""

    def __init__(self, *, nested: bool | None = None) -> None:
        super().__init__()
        self._nested = nested

    def _loop_factory(self):
        return Loop(nested=self._nested)


def new_event_loop(*, nested: bool | None = None) -> Loop:
    """A new cicada Loop (usable as `asyncio.Runner(loop_factory=cicada.loop.new_event_loop)`)."""
    return Loop(nested=nested)


def run(main, *, debug: bool | None = None):
    """Like asyncio.run(), on a new cicada loop (does not touch the event loop policy)."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


def install() -> None:
    """Make asyncio.new_event_loop() (and asyncio.run() without loop_factory) use cicada."""
    asyncio.set_event_loop_policy(EventLoopPolicy())
