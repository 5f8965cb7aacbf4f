"""Deadlines of the invocations running on an event loop, watched by the housekeeping thread."""

from __future__ import annotations

import math
from typing import Any, Protocol

from . import housekeeping
from .logs import logger


class Expiring(Protocol):
    def expire(self) -> None: ...


class DeadlineWatch(housekeeping.Chore):
    """The deadlines of one event loop's invocations (of one pool), a chore of the housekeeping thread.

    A request costs a dict entry and a comparison, and nothing is scheduled on the loop: a near
    timer pending at the head of asyncio's timer heap keeps the cancelled timers behind it
    (uvicorn schedules and cancels a keep-alive timer per request) from being dropped, and the
    loop then rebuilds its heap in Python now and then; a ticking timer cost 2-3% of a
    hello-world request's throughput. The housekeeping thread looks at the deadlines when the
    earliest one it was told of is due, hands each expiry to the loop, and comes back at the
    next one; a deadline is scheduled only if it comes before that (`due`), so while requests
    keep coming, the thread wakes about once per timeout, not per request.
    """

    __slots__ = ("_entries", "_loop")

    def __init__(self, loop: Any) -> None:
        super().__init__()
        self._loop = loop
        self._entries: dict[Expiring, float] = {}

    def add(self, item: Expiring, deadline: float) -> None:
        """Call `item.expire()` on the loop once `time.monotonic()` passes `deadline`."""
        self._entries[item] = deadline
        if deadline < self.due:  # (the usual deadline comes after the thread's next look)
            housekeeping.schedule(self, deadline)

    def discard(self, item: Expiring) -> None:
        self._entries.pop(item, None)  # (the thread's next look finds nothing due: lazy deletion)

    def close(self) -> None:
        """The pool closed: look now, so that the thread stops once no deadline is left."""
        housekeeping.schedule(self, -math.inf)

    def run(self, now: float) -> float:
        """On the housekeeping thread: hand what is due to the loop; the next deadline after `now`."""
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
                return math.inf
        return upcoming

    def _expire(self, items: list[Expiring]) -> None:
        for item in items:
            if self._entries.pop(item, None) is not None:  # not finished meanwhile
                try:
                    item.expire()
                except Exception:  # pragma: no cover - a callback must not stop the others
                    logger.exception("deadline callback failed")
