"""One housekeeping thread per process: a heap of chores, each done at its due time.

The chores: the deadlines of each event loop's invocations (`deadlines.DeadlineWatch`, one
chore per pool), each pool's idle expiry and freezing of idle child processes (`pool.Pool`),
and, on Python 3.11 under a tracer, the late unwinding of abandoned threads
(`isolation.thread`). A chore is scheduled at one time at most (its `due`); the heap holds
one entry per scheduled chore, plus entries left behind when a chore was brought forward
(they are dropped when they come up: lazy deletion). The thread sleeps on a condition until
the earliest entry is due, and is woken early only for a chore due before that.

The hot path stays a comparison: a chore's owner keeps what is due in its own structure (a
dict of deadlines, the pool's idle contexts) and calls `schedule()` only for a time before the
chore's `due`. A later time waits for the chore's run, which returns the next time it is due
(so a request's deadline costs a dict store and a comparison, and the thread wakes about once
per timeout while requests keep coming, not per request).

Chores run on the thread without the lock held, so they may schedule anything. They must not
block: what may wait (a child process's SHUTDOWN grace period) is handed elsewhere (the
context's own thread, or a short-lived one: `pool._Closing`), because every deadline of the
process waits behind it.

Lifetime. The thread is a raw `_thread` thread (nothing waits for it to start, so nothing can
hang near a memory limit), started on the first need and then kept: it stops only when no
chore is scheduled and no pool is open, so a server has one thread for its whole life, and a
process that shut its functions down has none of lambdify's left (DESIGN §5, transparency).
While pools are open but nothing is scheduled, it looks again every `IDLE_LOOK` seconds, to
notice pools that were dropped without being closed. After a fork the child has no thread
and no schedule: the inherited chores are reset, and the child starts its own thread on demand.
"""

from __future__ import annotations

import _thread
import heapq
import math
import threading
import time
import weakref
from typing import Any, Protocol

from . import hooks
from .logs import logger

INF = math.inf
IDLE_LOOK = 10.0  # seconds between looks while pools are open but nothing is scheduled


class _Owner(Protocol):
    closed: bool


class Chore:
    """Something the housekeeping thread does at a time: `run(now)`, which returns the next time
    it is due (`math.inf`: not until scheduled again).

    `due` is the time it is scheduled for (inf: none; also while it runs, so that a `schedule()`
    meanwhile takes the lock and is kept for after the run).
    """

    __slots__ = ("__weakref__", "_again", "_ref", "_running", "due")

    def __init__(self) -> None:
        self.due = INF
        self._running = False
        self._again = INF
        self._ref = weakref.ref(self)  # what the heap holds: a dropped owner's chore does not linger
        _housekeeping.chores.add(self)

    def run(self, now: float) -> float:  # pragma: no cover - every chore defines its own
        raise NotImplementedError


class Housekeeping:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, weakref.ref[Chore]]] = []
        self._seq = 0
        self._owners: weakref.WeakSet[Any] = weakref.WeakSet()
        self.chores: weakref.WeakSet[Chore] = weakref.WeakSet()
        self.wake_at = INF  # when the thread looks next (-inf while it is looking: no need to wake it)
        self.ident: int | None = None  # the thread's, while it runs
        self.starts = 0  # threads started (in this process)

    def hold(self, owner: _Owner) -> None:
        """Keep the thread while `owner` lives and is not `closed` (a pool), even with nothing scheduled."""
        with self._cond:
            self._owners.add(owner)

    def schedule(self, chore: Chore, at: float) -> None:
        """Run `chore` at `at` (monotonic time) at the latest; a later time than its `due` is a no-op."""
        with self._cond:
            if chore._running:
                if at < chore._again:
                    chore._again = at
                return
            if at >= chore.due:
                return
            chore.due = at
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, chore._ref))
            if at < self.wake_at:
                self._wake(at)

    def poke(self) -> None:
        """Look again now (an owner closed: the thread may stop)."""
        with self._cond:
            if self.ident is not None:
                self._cond.notify()

    def _wake(self, at: float) -> None:
        """With the lock held: have the thread look at `at`, starting it if there is none."""
        self.wake_at = at
        if self.ident is not None:
            self._cond.notify()
            return
        try:
            # A raw thread: nothing waits for it to start, so nothing can hang near a memory limit.
            self.ident = _thread.start_new_thread(self._run, ())
            self.starts += 1
        except RuntimeError as exc:  # pragma: no cover - out of threads
            self.wake_at = INF  # (the next chore due sooner tries again)
            logger.error("housekeeping thread not started (%s): deadlines and idle expiry are late", exc)

    def _run(self) -> None:
        cond, heap = self._cond, self._heap
        with cond:
            self.ident = _thread.get_ident()
            while True:
                self.wake_at = -INF
                now = time.monotonic()
                due = []
                while heap and heap[0][0] <= now:
                    at, _, ref = heapq.heappop(heap)
                    chore = ref()
                    if chore is not None and chore.due == at:  # (else brought forward or dropped since)
                        chore.due = INF
                        chore._running = True
                        due.append(chore)
                if due:
                    cond.release()
                    try:
                        done = [(chore, _run_chore(chore, now)) for chore in due]
                    finally:
                        cond.acquire()
                    for chore, at in done:
                        chore._running = False
                        at, chore._again = min(at, chore._again), INF
                        if at < INF:
                            chore.due = at
                            self._seq += 1
                            heapq.heappush(heap, (at, self._seq, chore._ref))
                    continue
                while heap and _stale(heap[0]):
                    heapq.heappop(heap)
                if heap:
                    self.wake_at = heap[0][0]
                elif any(not owner.closed for owner in self._owners):
                    self.wake_at = now + IDLE_LOOK
                else:  # nothing to do, nobody to do it for: the next `schedule()` starts a thread
                    self.wake_at = INF
                    self.ident = None
                    return
                cond.wait(self.wake_at - now)

    def reset_after_fork(self) -> None:
        """In a forked child: no thread, nothing scheduled (the parent's loops do not run here)."""
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
        self.wake_at = INF
        self.ident = None
        self.starts = 0
        for chore in list(self.chores):
            chore.due, chore._running, chore._again = INF, False, INF


def _run_chore(chore: Chore, now: float) -> float:
    try:
        return chore.run(now)
    except Exception:  # pragma: no cover - a chore must not stop the others, nor the thread
        logger.exception("housekeeping: %r failed", chore)
        return INF


def _stale(entry: tuple[float, int, weakref.ref[Chore]]) -> bool:
    chore = entry[2]()
    return chore is None or chore.due != entry[0]


_housekeeping = Housekeeping()
schedule = _housekeeping.schedule
hold = _housekeeping.hold
poke = _housekeeping.poke

hooks.at_fork(_housekeeping.reset_after_fork)
