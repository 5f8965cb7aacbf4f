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

The timer costs no system call per request: it is moved only when it would go off after the
new deadline, and going off early it moves itself on (see `enter`). It raises only while the
app's code (or lambdify's around it) runs: between steps (while the server writes, or a test
holds an unread response) nothing is armed, and an invocation whose deadline passed meanwhile
is stopped as soon as its code is entered again. A signal that lands after the invocation
ended is ignored.
Once the deadline has passed it goes off again every `_REFIRE` seconds, so that code which
swallows the first exception (`except Exception: continue`) is still stopped. An application that installed
its own SIGALRM handler keeps it: then `available()` is False and the caller uses a thread.

A C call that retries on EINTR by itself delays the timeout until it returns.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (the C module: no stubs)
import _thread
import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

from ..core import hooks

_REFIRE: Final = 0.1  # seconds between repeated alarms while the timed-out code runs on
_HAS_TIMER: Final = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")
_main_ident: int | None = threading.main_thread().ident


class DeadlineExceeded(BaseException):
    """Raised by the alarm in code running inline past its invocation's deadline.

    A `BaseException`, so that the usual `except Exception:` in user code does not swallow it.
    """


class Timed(Protocol):
    """What the timer watches: a deadline (`time.monotonic()` seconds) and whether it fired."""

    at: float
    fired: bool


class Deadline:
    """One invocation's deadline (`time.monotonic()` seconds), and whether it fired."""

    __slots__ = ("at", "fired")

    def __init__(self, at: float) -> None:
        self.at = at
        self.fired = False


_armed: Timed | None = None  # the deadline of the timed code on the main thread, if any
_timer_at = math.inf  # when the timer goes off next (`time.monotonic()`), as last set
_inside = False  # the timed code (the app's, lambdify's around it) is running, not the server's
_stack: list[Timed | None] = []  # what was armed when each running entry began
_shielded: set[Any] = set()  # code objects of lambdify's own bookkeeping around the timed code

F = TypeVar("F", bound=Callable[..., Any])


def shielded(fn: F) -> F:
    """Mark `fn` as bookkeeping around the timed code: an alarm landing in its own bytecodes
    (not in what it calls) is skipped, and comes again `_REFIRE` s later."""
    _shielded.add(fn.__code__)
    return fn


def _set_timer(at: float, now: float) -> None:
    global _timer_at
    _timer_at = at
    signal.setitimer(signal.ITIMER_REAL, max(at - now, 1e-6))


def _on_alarm(signum: int, frame: Any) -> None:
    global _armed, _timer_at
    _timer_at = math.inf
    deadline = _armed
    if deadline is None:  # no invocation runs: the timer was left for an earlier one
        return
    now = time.monotonic()
    if now < deadline.at:  # set for an earlier invocation's deadline: move it to this one's
        _set_timer(deadline.at, now)
        return
    deadline.fired = True
    if not _inside:  # (the server's code: never raise there; the invocation learns it on entering)
        _armed = None
        return
    _set_timer(now + _REFIRE, now)  # (again, if the code swallows this one)
    if frame is not None and frame.f_code in _shielded:
        return
    raise DeadlineExceeded("the invocation's deadline passed")


def available() -> bool:
    """Whether code called on this thread can run inline under the alarm.

    True on the main thread of a platform with `setitimer`, when SIGALRM is lambdify's or
    unclaimed (then lambdify's handler is installed); False when the application has a handler.
    """
    if _thread.get_ident() != _main_ident or not _HAS_TIMER:
        return False
    current = _signal.getsignal(signal.SIGALRM)  # (signal.getsignal makes an enum member: 9 µs)
    if current is _on_alarm:
        return True
    if current != _signal.SIG_DFL:  # (an int here: not the enum that signal.getsignal makes)
        return False
    signal.signal(signal.SIGALRM, _on_alarm)
    return True


def enter(deadline: Timed) -> bool:
    """The timed code starts (or resumes) running; False if its deadline has passed already.

    The timer is moved only when it would go off after this deadline. Invocations of one
    middleware have one timeout, so each one's deadline comes after the timer that an earlier
    one left: a request costs no system call, and the timer, going off early, moves itself on
    (about once per timeout period). Entries nest (a middleware inside another); `leave()`
    puts back what was armed before.
    """
    global _armed, _inside
    if deadline.fired:
        return False
    _stack.append(_armed)
    _armed = deadline
    if _timer_at > deadline.at:
        _set_timer(deadline.at, time.monotonic())
    _inside = True
    return True


def leave() -> None:
    """Back to the code that entered: the server's, where the alarm never raises."""
    global _armed, _inside
    _armed = _stack.pop() if _stack else None
    _inside = bool(_stack)


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

        Inside timed code (or off the main thread) it just runs: that code's deadline holds.
        """
        if _inside or not available():
            return fn(*args)
        deadline = Deadline(time.monotonic() + timeout)
        enter(deadline)
        try:
            return fn(*args)
        except BaseException:
            if deadline.fired:
                raise TimeoutError(None) from None
            raise
        finally:
            leave()

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


def _cancel_timer() -> None:
    """At exit: a timer left set for a past invocation must not go off while the interpreter
    finalizes, when SIGALRM is back to its default action (the process would die of it)."""
    global _timer_at
    if _timer_at != math.inf:
        _timer_at = math.inf
        signal.setitimer(signal.ITIMER_REAL, 0)


hooks.at_exit(_cancel_timer, hooks.FINAL)


def _reset_after_fork() -> None:
    global _main_ident, _armed, _timer_at, _inside
    _main_ident = _thread.get_ident()  # the forking thread is the child's main thread
    _armed, _timer_at, _inside = None, math.inf, False  # (a timer is not inherited by a child)
    _stack.clear()


hooks.at_fork(_reset_after_fork)
