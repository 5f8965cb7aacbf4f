"""Deadlines of the invocations running on an event loop, watched from one thread per process."""

from __future__ import annotations

import _thread
import math
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from . import hooks
from .logs import logger

if TYPE_CHECKING:
    pass


class Expiring(Protocol):
    def expire(self) -> None: ...


class DeadlineWatch:
    """The deadlines of one event loop's invocations, watched from a thread (one per process).

    A request costs a dict entry, and nothing is scheduled on the loop: a near timer pending at
    the head of asyncio's timer heap keeps the cancelled timers behind it (uvicorn schedules and
    cancels a keep-alive timer per request) from being dropped, and the loop then rebuilds its
    heap in Python now and then; a ticking timer cost 2-3% of a hello-world request's throughput.
    The watcher sleeps until the earliest deadline and hands each expiry to the loop.
    """

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._entries: dict[Expiring, float] = {}
        _watcher.register(self)

    def add(self, item: Expiring, deadline: float) -> None:
        """Call `item.expire()` on the loop once `time.monotonic()` passes `deadline`."""
        self._entries[item] = deadline
        if deadline < _watcher.wake_at:  # (the usual deadline comes after the watcher's next look)
            _watcher.wake_by(deadline)

    def discard(self, item: Expiring) -> None:
        self._entries.pop(item, None)

    def close(self) -> None:
        """The pool closed: the watcher stops once no deadline is left (no thread outlives the work)."""
        _watcher.poke()

    def _due(self, now: float) -> float:
        """On the watcher's thread: hand what is due to the loop; the next deadline after `now`."""
        upcoming = math.inf
        due = []
        for item, deadline in list(self._entries.items()):
            if deadline <= now:
                due.append(item)
            elif deadline < upcoming:
                upcoming = deadline
        if due:
            try:
                self._loop.call_soon_threadsafe(self._expire, due)
            except RuntimeError:  # the loop is closed: nothing of it is left to stop
                self._entries.clear()
        return upcoming

    def _expire(self, items: list[Expiring]) -> None:
        for item in items:
            if self._entries.pop(item, None) is not None:  # not finished meanwhile
                try:
                    item.expire()
                except Exception:  # pragma: no cover - a callback must not stop the others
                    logger.exception("deadline callback failed")


class _Watcher:
    """The thread behind every DeadlineWatch of the process: it sleeps until the earliest deadline
    it knows of (`wake_at`), and is woken early only for a deadline sooner than that."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._watches: weakref.WeakSet[DeadlineWatch] = weakref.WeakSet()
        self._started = False
        self.wake_at = math.inf

    def register(self, watch: DeadlineWatch) -> None:
        with self._cond:
            self._watches.add(watch)

    def wake_by(self, deadline: float) -> None:
        with self._cond:
            if deadline >= self.wake_at:
                return
            self.wake_at = deadline
            if self._started:
                self._cond.notify()
                return
            try:
                # A raw thread: nothing waits for it to start, so nothing can hang near a memory limit.
                _thread.start_new_thread(self._run, ())
                self._started = True
            except RuntimeError as exc:  # pragma: no cover - out of threads
                self.wake_at = math.inf
                logger.error("deadline watcher not started (%s); deadlines on event loops will not fire", exc)

    def poke(self) -> None:
        with self._cond:
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                # While it looks, `wake_at` is -inf: an `add` meanwhile waits for the lock, and
                # then finds out whether its deadline comes before the watcher's next look.
                self.wake_at = -math.inf
                now = time.monotonic()
                upcoming = min((watch._due(now) for watch in list(self._watches)), default=math.inf)
                self.wake_at = upcoming
                if upcoming == math.inf:  # no deadline left: the next `add` starts a new thread
                    self._started = False
                    return
                self._cond.wait(upcoming - now)

    def reset_after_fork(self) -> None:
        self.__init__()  # type: ignore[misc]


_watcher = _Watcher()

hooks.at_fork(_watcher.reset_after_fork)  # its thread is not in the child, nor are the parent's loops
