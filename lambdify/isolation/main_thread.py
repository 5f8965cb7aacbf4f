"""Running a context's code inline on the process's main thread, under a SIGALRM deadline.

gunicorn's sync worker and wsgiref call a WSGI app on the process's main thread, one request
at a time. There the app can run right where it is called, with no hand-off to another thread:
the main thread is the context's dedicated thread for its whole life (affinity holds), and the
deadline is a real-time interval timer (`setitimer(ITIMER_REAL)`) whose SIGALRM handler raises
`DeadlineExceeded` in the running code; the caller gets `InvocationTimeout`. A raising handler
also breaks blocking system calls (`time.sleep`, socket reads): PEP 475 retries them only when
the handler returns. `DeadlineExceeded` is a BaseException, as `Abandoned` is in a thread, so
that the app's and its framework's `except Exception:` do not take it for the app's own error
(Flask would log it and answer 500 with the deadline already past); `finally` blocks still run.

The timer is armed only while lambdify or the app's code runs (never while the server writes a
response), restored on the way out, and a signal that lands after the invocation ended is
ignored. It re-fires every `_REFIRE` seconds until disarmed, so that code which swallows the
first exception (`except Exception: continue`) is still stopped. An application that installed
its own SIGALRM handler keeps it: then `available()` is False and the caller uses a thread.

A C call that retries on EINTR by itself delays the timeout until it returns.
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

_REFIRE: Final = 0.1  # seconds between repeated alarms while the timed-out code runs on
_HAS_TIMER: Final = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")
_main_ident: int | None = threading.main_thread().ident


class DeadlineExceeded(BaseException):
    """Raised by the alarm in code running inline past its invocation's deadline.

    A `BaseException`, so that the usual `except Exception:` in user code does not swallow it.
    """


class Deadline:
    """One armed deadline: whether it fired."""

    __slots__ = ("fired",)

    def __init__(self) -> None:
        self.fired = False


_armed: Deadline | None = None
_shielded: set[Any] = set()  # code objects of lambdify's own bookkeeping around the timed code

F = TypeVar("F", bound=Callable[..., Any])


def shielded(fn: F) -> F:
    """Mark `fn` as bookkeeping that arms and disarms the alarm: an alarm landing in its own
    bytecodes (not in what it calls) is skipped, and comes again `_REFIRE` s later if still armed."""
    _shielded.add(fn.__code__)
    return fn


def _on_alarm(signum: int, frame: Any) -> None:
    deadline = _armed
    if deadline is None:  # the invocation ended before the signal landed
        return
    if frame is not None and frame.f_code in _shielded:
        return
    deadline.fired = True
    raise DeadlineExceeded("the invocation's deadline passed")


def available() -> bool:
    """Whether code called on this thread can run inline under the alarm.

    True on the main thread of a platform with `setitimer`, when SIGALRM is lambdify's or
    unclaimed (then lambdify's handler is installed); False when the application has a handler.
    """
    if _thread.get_ident() != _main_ident or not _HAS_TIMER:
        return False
    current = signal.getsignal(signal.SIGALRM)
    if current is _on_alarm:
        return True
    if current is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGALRM, _on_alarm)
    return True


def arm(seconds: float, deadline: Deadline) -> None:
    """Raise `deadline.error()` in the main thread in `seconds` (and again every `_REFIRE` s)."""
    global _armed
    _armed = deadline
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-6), _REFIRE)


def disarm() -> None:
    """Stop the alarm; a signal already on its way is ignored."""
    global _armed
    _armed = None
    signal.setitimer(signal.ITIMER_REAL, 0)


def armed() -> bool:
    return _armed is not None


class _DoneCall:
    """A call that has run already (what `MainThreadWorker.submit` returns)."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = _thread.allocate_lock()  # unlocked: finished


class MainThreadWorker:
    """A context's "thread" when that is the main thread: calls run inline, deadlines by alarm.

    The same surface as `isolation.thread.Worker`. Nothing is ever abandoned: the alarm ends
    the overrunning code on the spot. Work submitted from another thread (a shutdown started
    elsewhere) runs on that thread, since the main thread cannot be interrupted to run it.
    """

    name = "main thread"
    abandoned = False
    busy = False

    @property
    def ident(self) -> int | None:
        return _main_ident

    @shielded
    def call(self, fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """`fn(*args)` here; `TimeoutError` if it runs past `timeout` seconds.

        Inside an armed invocation (or off the main thread) it just runs: that deadline holds.
        """
        if _armed is not None or not available():
            return fn(*args)
        deadline = Deadline()
        arm(timeout, deadline)
        try:
            return fn(*args)
        except BaseException:
            if deadline.fired:
                raise TimeoutError(None) from None
            raise
        finally:
            disarm()

    def submit(self, fn: Callable[..., Any], *args: Any, on_done: Any = None) -> _DoneCall:
        call = _DoneCall()
        try:
            call.result = fn(*args)
        except BaseException as exc:  # noqa: B036 - delivered to the caller, as Worker does
            call.error = exc
        if on_done is not None:
            on_done(call)
        return call

    def abandon(self, call: Any = None, on_unwound: Any = None) -> bool:
        return False

    def stop(self) -> None:
        pass


_worker = MainThreadWorker()


def main_thread_worker() -> MainThreadWorker:
    return _worker


def _reset_after_fork() -> None:
    global _main_ident, _armed
    _main_ident = _thread.get_ident()  # the forking thread is the child's main thread
    _armed = None


os.register_at_fork(after_in_child=_reset_after_fork)
