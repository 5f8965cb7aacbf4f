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

Under a tracer or profiler on CPython 3.11 (coverage, a debugger, cProfile), an asynchronous
exception that is pending makes every traced thread spin at each Python call until the target
thread takes it: 3.11's tracing path re-checks the eval breaker at a function's RESUME without
moving on, and the flag is interpreter-wide (coveragepy #1626). A thread blocked in `sleep` or
`recv` takes it only when that call returns, so the caller would spin until then, or forever.
There the exception is held back until the thread is seen running (its CPU clock advances), and
a thread that stays blocked is left to end on its own. (Withdrawing a pending exception would
not help: on 3.11 that leaves the flag set for good.)
"""

from __future__ import annotations

import _thread
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from ..core import hooks, housekeeping
from ..core.context import ExecutionContext
from ..core.errors import ThreadStartError

if TYPE_CHECKING:
    from ..core.engine import Engine

_START_TIMEOUT = 5.0
_start_thread = _thread.start_new_thread


class Abandoned(BaseException):
    """Raised inside an abandoned thread to unwind the code that overran its deadline.

    A `BaseException`, so that the usual `except Exception:` in user code does not swallow it.
    """


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
                del call  # (an idle thread must not keep its last call's arguments, the app among them, alive)
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
            # Its outcome is for nobody: the caller was answered, and its event loop may be closed
            # by the time the call ends (a callback into it would fail on this thread).
            running.on_done = None
            if self.ident is not None:
                if _TRACING_SPINS and _tracer_active():
                    _late.add(self, self.ident, running)
                else:
                    _raise_in_thread(self.ident, Abandoned)
        return True

    def _unwind_if_running(self, call: _Call) -> bool:
        """Raise `Abandoned` in the thread if `call` is still running; False once it has ended."""
        with self._guard:
            if self._current is not call or self.ident is None:
                return False
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


# CPython 3.11 only: 3.10's tracing path has no RESUME, 3.12 replaced it (PEP 669).
_TRACING_SPINS: Final = sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
_POLL_FIRST = 0.01
_POLL_MAX = 0.25
_BUSY_CPU = 0.001  # CPU seconds between two looks that mean "running", not "blocked"


def _tracer_active() -> bool:
    """A trace or profile function on this thread, or one that new threads get (coverage sets both)."""
    return any(
        hook is not None for hook in (sys.gettrace(), sys.getprofile(), threading.gettrace(), threading.getprofile())
    )


class _LateUnwind(housekeeping.Chore):
    """Raises `Abandoned` in abandoned threads once each is seen running Python code (3.11, traced).

    A chore of the housekeeping thread while such a thread is abandoned and still in its call:
    it looks at each one's CPU clock, every 10 ms at first and less often the longer nothing
    changes.
    """

    __slots__ = ("_interval", "_lock", "_watched")

    def __init__(self) -> None:
        super().__init__()
        self._lock = _thread.allocate_lock()
        self._watched: dict[Worker, tuple[_Call, int, float]] = {}
        self._interval = _POLL_FIRST

    def add(self, worker: Worker, ident: int, call: _Call) -> None:
        """Called with `worker._guard` held and `call` running, so thread `ident` is alive."""
        try:
            clock = time.pthread_getcpuclockid(ident)
            cpu = time.clock_gettime(clock)
        except (AttributeError, OSError):  # no per-thread CPU clock (macOS): left to end on its own
            return
        with self._lock:
            self._watched[worker] = (call, clock, cpu)
            self._interval = _POLL_FIRST
        housekeeping.schedule(self, time.monotonic() + _POLL_FIRST)

    def run(self, now: float) -> float:
        with self._lock:
            watched = list(self._watched.items())
            interval = self._interval
            self._interval = min(interval * 2, _POLL_MAX)
        for worker, (call, clock, cpu) in watched:
            try:
                cpu_now: float | None = time.clock_gettime(clock)
            except OSError:  # the thread has ended
                cpu_now = None
            if cpu_now is not None and cpu_now - cpu < _BUSY_CPU and worker._current is call:
                still: tuple[_Call, int, float] | None = (call, clock, cpu_now)  # blocked: look again later
            else:
                # Running Python code (it takes the exception within a switch interval), or done.
                if cpu_now is not None:
                    worker._unwind_if_running(call)
                still = None
            with self._lock:
                if self._watched.get(worker, (None,))[0] is call:  # not abandoned again meanwhile
                    if still is None:
                        del self._watched[worker]
                    else:
                        self._watched[worker] = still
        with self._lock:
            return time.monotonic() + self._interval if self._watched else math.inf

    def reset_after_fork(self) -> None:
        self._watched.clear()  # (the parent's threads are not in the child)
        self._lock = _thread.allocate_lock()
        self._interval = _POLL_FIRST


_late = _LateUnwind()
hooks.at_fork(_late.reset_after_fork)


class _ThreadBackend:
    """Thread isolation: each context runs its sync code on a dedicated thread of this process."""

    name = "thread"
    context_class = ExecutionContext
    run_sync: Callable[..., Any] | None = None  # (the engine's own drivers)
    run_async: Callable[..., Awaitable[Any]] | None = None

    @staticmethod
    def worker(name: str) -> Worker:
        return Worker(name)

    @staticmethod
    def main_thread_worker() -> Any:
        from .main_thread import main_thread_worker

        return main_thread_worker()

    @staticmethod
    def check(engine: Engine) -> None:
        pass


THREAD: Final = _ThreadBackend()
