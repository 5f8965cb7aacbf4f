"""A dedicated OS thread per execution context.

Affinity: all of a context's sync code (INIT, sync handlers, sync deferred work, SHUTDOWN)
runs on one thread for the context's whole life, so thread-bound objects such as sqlite3
connections stay valid. A hop to a thread that is already waiting costs one wake-up, far less
than a round trip through a shared thread pool.

Waking the thread: the caller queues a call and rings a doorbell, an eventfd (a pipe where
there is none) that the thread blocks on. Writing to it releases the GIL, so the woken thread
starts running at once; a lock released while the caller holds the GIL (as `queue.Queue` does)
wakes it only to wait for the GIL, and costs two or three more context switches per call (a
round trip on one CPU: 12-15 µs against 7 µs, `benchmarks/mechanisms.py`).

A thread cannot be killed. At a deadline the caller is answered at once and the thread is
*abandoned*: an asynchronous exception is raised in it, which ends pure-Python code at its
next bytecode and a sleeping or blocked call when it returns. Code stuck in a C call that
holds the GIL stalls the whole interpreter; only process isolation covers that.
"""

from __future__ import annotations

import _thread
import os
import sys
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Final

_START_TIMEOUT = 5.0
_start_thread = _thread.start_new_thread


class Abandoned(BaseException):
    """Raised inside an abandoned thread to unwind the code that overran its deadline.

    A `BaseException`, so that the usual `except Exception:` in user code does not swallow it.
    """


class ThreadStartError(RuntimeError):
    """The OS could not start a thread (usually: memory is at its limit)."""


class _Call:
    __slots__ = ("args", "done", "error", "fn", "on_done", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], on_done: Callable[[_Call], None] | None) -> None:
        self.fn = fn
        self.args = args
        self.on_done = on_done
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = _thread.allocate_lock()
        self.done.acquire()


_STOP: Final = _Call(lambda: None, (), None)


class _Doorbell:
    """Rings that one thread waits for, rung by others without the GIL held during the wake-up.

    `wait()` returns once the bell has rung since the last `wait()` (any number of rings count
    as one), so a waiter must look at what it waits for before waiting again. The fds are closed
    when the bell is garbage: only then can no thread ring it any more (a closed fd's number may
    be reused by the next `open`).
    """

    __slots__ = ("_fds", "ring", "wait")

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):  # Linux: one fd
            fd = os.eventfd(0, os.EFD_CLOEXEC)
            self._fds: tuple[int, ...] = (fd,)
            self.ring: Callable[[], Any] = partial(os.eventfd_write, fd, 1)
            self.wait: Callable[[], Any] = partial(os.eventfd_read, fd)
        else:
            read_fd, write_fd = os.pipe()
            self._fds = (read_fd, write_fd)
            self.ring = partial(os.write, write_fd, b"\0")
            self.wait = partial(os.read, read_fd, 4096)

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        for fd in getattr(self, "_fds", ()):  # (none if making them failed)
            _close(fd)


class Worker:
    """One thread that runs calls in order. `call()` waits with a timeout; `submit()` does not."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ident: int | None = None
        self.abandoned = False
        self._on_unwound: Callable[[], None] | None = None
        self._calls: deque[_Call] = deque()
        self._bell = _Doorbell()
        self._current: _Call | None = None
        self._guard = _thread.allocate_lock()
        _prepare_async_exc()
        started = _thread.allocate_lock()
        started.acquire()
        # Near an RLIMIT_DATA/RLIMIT_AS ceiling, threading.Thread.start() can wait forever for a
        # thread that died of MemoryError before it could signal; a raw thread and a bounded
        # wait turn that into an error instead.
        try:
            _start_thread(self._run, (started,))
        except (RuntimeError, MemoryError) as exc:
            raise ThreadStartError(f"could not start a thread for {name}: {exc}") from exc
        if not started.acquire(timeout=_START_TIMEOUT):
            raise ThreadStartError(f"the thread for {name} did not start within {_START_TIMEOUT:g} s (out of memory?)")

    @property
    def busy(self) -> bool:
        return self._current is not None

    def _run(self, started: Any) -> None:
        self.ident = _thread.get_ident()
        started.release()
        calls, wait = self._calls, self._bell.wait
        while True:
            try:
                if not calls:
                    wait()
                    continue
                call = calls.popleft()
                if call is _STOP:
                    return
                self._current = call
                try:
                    call.result = call.fn(*call.args)
                except BaseException as exc:  # noqa: B036 - delivered to the caller, never dropped
                    call.error = exc
                with self._guard:
                    self._current = None
                    unwound, self._on_unwound = self._on_unwound, None
                call.done.release()
                if unwound is not None:
                    unwound()
                if call.on_done is not None:
                    call.on_done(call)
            except Abandoned:
                # Delivered a moment after the overrunning call had already ended: nothing to unwind.
                continue

    def submit(self, fn: Callable[..., Any], *args: Any, on_done: Callable[[_Call], None] | None = None) -> _Call:
        """Queue `fn(*args)`; `on_done(call)` runs on this thread when it has finished."""
        call = _Call(fn, args, on_done)
        if self.ident == _thread.get_ident():
            raise RuntimeError(f"{self.name}: cannot queue work from its own thread")
        self._calls.append(call)
        self._bell.ring()
        return call

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """Run `fn(*args)` on this thread and return its result; `TimeoutError` after `timeout` seconds.

        Called from this very thread (re-entrant use), `fn` runs inline.
        """
        if self.ident == _thread.get_ident():
            return fn(*args)
        call = self.submit(fn, *args)
        if not call.done.acquire(timeout=max(timeout, 0.0)):
            raise TimeoutError(call)
        if call.error is not None:
            raise call.error
        return call.result

    def abandon(self, call: _Call | None = None, on_unwound: Callable[[], None] | None = None) -> bool:
        """Give up on the running call: unwind it with `Abandoned`; queued calls still run after it.

        Returns True if a call was still running (the thread is then counted as abandoned);
        `on_unwound()` runs on this thread once that call has ended after all.
        """
        with self._guard:
            running = self._current
            if running is None or (call is not None and running is not call):
                return False
            self.abandoned = True
            self._on_unwound = on_unwound
            if self.ident is not None:
                _raise_in_thread(self.ident, Abandoned)
        return True

    def stop(self) -> None:
        """End the thread after the calls already queued."""
        self._calls.append(_STOP)
        self._bell.ring()


_set_async_exc: Callable[[int, type[BaseException]], Any] | None = None


def _prepare_async_exc() -> None:
    """Resolve the C API up front: importing ctypes at the deadline, while the overrunning thread
    competes for the GIL, would delay the caller's answer by tens of milliseconds."""
    global _set_async_exc
    if _set_async_exc is not None or sys.implementation.name != "cpython":
        return
    import ctypes

    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
    _set_async_exc = set_async_exc


def _raise_in_thread(ident: int, exc_type: type[BaseException]) -> None:
    if _set_async_exc is not None:
        _set_async_exc(ident, exc_type)
