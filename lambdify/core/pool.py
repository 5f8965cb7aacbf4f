"""The pool: warm execution contexts of one Function, per worker process and event loop.

It hands out a context with free capacity, most recently used first (so that the least
recently used ones idle out, as on Lambda), creates one (a cold start) while the pool is below
`max_contexts`, and otherwise queues the caller for up to `queue_timeout` before throttling.
Contexts of a loop-less pool run everything on their own thread; contexts of a loop's pool
run their async code on that loop.

Threads: a loop-less pool is used from any thread, under its lock. A loop's pool changes only
on its loop's thread, so its hot path (`take`, `release`) takes no lock: the two things other
threads do to it, idle expiry (the housekeeping thread) and `close()` (a shutdown from another
thread), are handed to the loop while it runs.

Idle expiry and freezing are a chore of the housekeeping thread (`_Reaper`), due when the
oldest idle context expires or the next idle child process is to be frozen: a release
schedules it only if the context it leaves idle comes due before that (one comparison), and
the chore, when it runs, schedules itself for the next one.
"""

from __future__ import annotations

import _thread
import math
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from . import housekeeping
from .background import current_task_getter
from .cold_start import ColdStarts
from .context import ExecutionContext
from .deadlines import DeadlineWatch
from .errors import TooManyRequests
from .logs import logger
from .retirement import FREEZE_AFTER, Retirement, _Reaper

if TYPE_CHECKING:
    import asyncio

    from .engine import Engine


INVOCATION_COUNTERS = ("cold_starts", "warm_starts", "errors", "timeouts", "oom")


class _Waiter:
    __slots__ = ("context", "create", "future", "lock")

    def __init__(self, future: asyncio.Future[None] | None = None) -> None:
        self.context: ExecutionContext | None = None
        self.create = False
        self.future = future
        self.lock: Any = None
        if future is None:
            self.lock = threading.Lock()
            self.lock.acquire()

    def wake(self) -> None:
        if self.future is None:
            self.lock.release()
        else:
            future = self.future
            future.get_loop().call_soon_threadsafe(_set_none, future)


class Pool(ColdStarts, Retirement):
    """Contexts of one Function for one event loop (`loop=None`: for sync invocations)."""

    def __init__(self, function: Engine, loop: asyncio.AbstractEventLoop | None, main_thread: bool = False) -> None:
        self.function = function
        self.config = function.config
        self.loop = loop
        # Contexts whose code runs inline on the main thread (WSGI under gunicorn's sync worker):
        # only that thread uses the pool, and idle ones expire when it next asks for one.
        self.main_thread = main_thread
        self._lock = threading.Lock()
        self._idle: dict[str, ExecutionContext] = {}  # active == 0, in release order: newest last
        self._warm: list[ExecutionContext] = []  # provisioned and idle: never expire
        self._partial: dict[str, ExecutionContext] = {}  # busy but below `concurrency`
        # A shared context (concurrency > 1) stays in `_partial` while idle, rather than moving
        # to `_idle` and back on every request; idle expiry looks for it there.
        self._idle_in_partial = self.config.concurrency != 1 and self.config.isolation == "thread"
        self._contexts: dict[str, ExecutionContext] = {}
        # Contexts out of `_contexts` whose SHUTDOWN is not in `_closing` yet (a graceful shutdown
        # waits for these too: a context is always in one of the three until it is closed).
        self._retiring: set[str] = set()
        self.starting: dict[str, ExecutionContext] = {}  # in INIT, not yet in `_contexts`
        self._reserved = 0
        self._waiters: deque[_Waiter] = deque()
        self._closing: list[Any] = []
        self.closed = False
        self._reap_scheduled = False
        self.counts = dict.fromkeys(INVOCATION_COUNTERS, 0)  # invocations ended here
        function.count_pool(self)
        self.watch = DeadlineWatch(loop)  # the deadlines of this loop's invocations
        self.current_task = current_task_getter() if loop is not None else _no_task
        # The thread that made a loop's pool runs its loop (pools are made from a coroutine on it).
        self.thread = _thread.get_ident() if loop is not None else None
        self.loop_running = loop.is_running if loop is not None else _not_running
        # Idle contexts of a main-thread pool expire when it next asks for one; others on the
        # housekeeping thread, `_idle_for` seconds after a release at the earliest.
        self._reaper = _Reaper(self)
        self._freezes = self.config.isolation == "process"
        self._idle_for = math.inf
        if not main_thread:
            self._idle_for = min(self.config.idle_ttl, FREEZE_AFTER) if self._freezes else self.config.idle_ttl
            housekeeping.hold(self)

    def __repr__(self) -> str:
        return f"<Pool {self.config.name} loop={self.loop!r} contexts={len(self._contexts)}>"

    @property
    def alive(self) -> int:
        return len(self._contexts)

    def contexts(self) -> list[ExecutionContext]:
        """The live contexts (a copy: other threads may change the pool meanwhile)."""
        return list(self._contexts.values())

    def provisioned(self) -> int:
        return sum(1 for ctx in self.contexts() if ctx.provisioned)

    def reserve(self) -> None:
        """Make room for one context that the caller creates next (`create`/`acreate`)."""
        with self._lock:
            self._reserved += 1

    # -- handing out contexts (call with the lock held) ----------------------------------

    def _take(self) -> ExecutionContext | None:
        cap = self.config.concurrency
        partial = self._partial
        if partial:
            ctx = partial[next(reversed(partial))]
            ctx.active += 1
            if cap is not None and ctx.active >= cap:
                del self._partial[ctx.id]
            return ctx
        if self._warm:
            ctx = self._warm.pop()
        elif self._idle:
            ctx = self._idle.popitem()[1]
        else:
            return None
        ctx.active = 1
        if cap != 1:
            self._partial[ctx.id] = ctx
        return ctx

    def _has_room(self) -> bool:
        limit = self.config.max_contexts
        return not self.closed and (limit is None or len(self._contexts) + self._reserved < limit)

    def _expired(self, now: float) -> list[ExecutionContext]:
        ttl = self.config.idle_ttl
        expired = []
        for ctx in self._idle.values():
            if now - ctx.idle_since < ttl:
                break
            expired.append(ctx)
        for ctx in expired:
            del self._idle[ctx.id]
        if self._idle_in_partial:
            shared = [ctx for ctx in self._partial.values() if ctx.active == 0 and now - ctx.idle_since >= ttl]
            for ctx in shared:
                del self._partial[ctx.id]
            expired += shared
        for ctx in expired:
            del self._contexts[ctx.id]
            self._retiring.add(ctx.id)
            ctx.retired = True
        return expired

    def _claim(self) -> tuple[ExecutionContext | None, _Waiter | None, list[ExecutionContext]]:
        """One step of acquiring: a context, or room to create one (neither), or a place in the queue."""
        expired = self._expired(time.monotonic()) if self._idle or self._idle_in_partial else []
        if self.closed:
            raise TooManyRequests(f"function {self.config.name!r} is shutting down")
        ctx = self._take()
        if ctx is not None:
            return ctx, None, expired
        if self._has_room():
            self._reserved += 1
            return None, None, expired
        return None, _Waiter(), expired

    def take(self) -> ExecutionContext | None:
        """A warm context with free capacity, if there is one (the hot path: no waiting, no INIT)."""
        if self.loop is not None:  # on the loop's thread, the only one that changes its pool
            return None if self.closed else self._take()
        lock = self._lock
        lock.acquire()  # (not `with`: on the hot path its method lookups cost as much as the lock)
        try:
            return None if self.closed else self._take()
        finally:
            lock.release()

    # -- sync callers ---------------------------------------------------------------------

    def acquire(self, request_id: str | None = None) -> tuple[ExecutionContext, bool]:
        """A context for one invocation, and whether it was created for it (a cold start).

        `request_id` is the invocation's: an `InitError` of the INIT it triggers carries it.
        """
        with self._lock:
            ctx, waiter, expired = self._claim()
            if waiter is not None:
                self._waiters.append(waiter)
        self._retire_expired(expired)
        if ctx is not None:
            return ctx, False
        if waiter is not None:
            if not waiter.lock.acquire(timeout=self.config.queue_timeout) and self._give_up(waiter):
                raise self._throttled()
            if waiter.context is not None:
                return waiter.context, False
            if not waiter.create:
                raise TooManyRequests(f"function {self.config.name!r} is shutting down")
        return self.create(request_id=request_id), True

    # -- async callers --------------------------------------------------------------------

    async def aacquire(self, request_id: str | None = None) -> tuple[ExecutionContext, bool]:
        import asyncio

        with self._lock:
            ctx, waiter, expired = self._claim()
            if waiter is not None:
                waiter.future = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
        self._retire_expired(expired)
        if ctx is not None:
            return ctx, False
        if waiter is not None:
            assert waiter.future is not None
            try:
                async with asyncio.timeout(self.config.queue_timeout):
                    await waiter.future
            except TimeoutError:
                if self._give_up(waiter):
                    raise self._throttled() from None
            if waiter.context is not None:
                return waiter.context, False
            if not waiter.create:
                raise TooManyRequests(f"function {self.config.name!r} is shutting down")
        return await self.acreate(request_id=request_id), True

    # -- giving contexts back -------------------------------------------------------------

    def release(
        self, ctx: ExecutionContext, retire: str | None = None, started: str | None = None, failed: str | None = None
    ) -> None:
        """End one invocation on `ctx`; `retire` (a reason) takes the context out of service.

        `started` ("cold_starts"/"warm_starts") and `failed` ("errors", "timeouts", "oom") name
        the counters the invocation adds to.
        """
        if self.loop is not None and retire is None and not self.closed and not self._waiters and not ctx.retired:
            # The hot path: a loop's pool (changed only on its thread: no lock), and the context
            # stays in service: still busy, or idle and not provisioned (warm ones go to `_warm`).
            active = ctx.active - 1
            if active or not ctx.provisioned:
                if started is not None:
                    self.counts[started] += 1
                    if failed is not None:
                        self.counts[failed] += 1
                ctx.active = active
                if active:
                    self._partial[ctx.id] = ctx  # (below its cap again)
                    return
                ctx.idle_since = now = time.monotonic()
                if not self._idle_in_partial:  # (a shared context stays in `_partial` while idle)
                    self._partial.pop(ctx.id, None)
                    self._idle[ctx.id] = ctx
                if now + self._idle_for < self._reaper.due:
                    housekeeping.schedule(self._reaper, now + self._idle_for)
                return
        shutdown = False
        idle_at = math.inf
        lock = self._lock if self.loop is None else None  # (a loop's pool: only its thread, see take())
        if lock is not None:
            lock.acquire()
        try:
            if started is not None:
                self.counts[started] += 1
                if failed is not None:
                    self.counts[failed] += 1
            ctx.active -= 1
            if retire is not None and not ctx.retired:
                ctx.retired = True
                logger.info("retiring %r: %s", ctx, retire)
            if ctx.retired or self.closed:
                ctx.retired = True
                self._partial.pop(ctx.id, None)
                if ctx.active == 0 and self._contexts.pop(ctx.id, None) is not None:
                    self._retiring.add(ctx.id)
                    shutdown = True
                    self._pass_room_on()
            elif self._waiters:
                waiter = self._waiters.popleft()
                ctx.active += 1
                waiter.context = ctx
                waiter.wake()
            elif ctx.active == 0:
                ctx.idle_since = now = time.monotonic()
                if not ctx.provisioned or self._freezes:  # (a warm thread context neither expires nor freezes)
                    idle_at = now + self._idle_for
                if ctx.provisioned:
                    self._partial.pop(ctx.id, None)
                    self._warm.append(ctx)
                elif self._idle_in_partial:
                    self._partial[ctx.id] = ctx
                else:
                    self._partial.pop(ctx.id, None)
                    self._idle[ctx.id] = ctx
            else:
                self._partial[ctx.id] = ctx
        finally:
            if lock is not None:
                lock.release()
        if idle_at < self._reaper.due:
            housekeeping.schedule(self._reaper, idle_at)
        if shutdown:
            self._shutdown(ctx)

    def _pass_room_on(self) -> None:
        if self._waiters and self._has_room():
            waiter = self._waiters.popleft()
            self._reserved += 1
            waiter.create = True
            waiter.wake()

    def _give_up(self, waiter: _Waiter) -> bool:
        """The caller stopped waiting; False if it was served in the meantime (then it must take it)."""
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return True
        return False

    def _throttled(self) -> TooManyRequests:
        self.function.count("throttles")
        limit = self.config.max_contexts
        return TooManyRequests(
            f"Rate Exceeded: {self.config.name} has {limit} execution context(s) busy "
            f"and none freed up within {self.config.queue_timeout:g} s"
        )


def _no_task(loop: Any) -> None:
    return None


def _not_running() -> bool:
    return False


def _set_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
