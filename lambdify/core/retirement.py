"""Retirement of a pool's contexts: idle expiry and freezing (a chore of the housekeeping
thread), SHUTDOWN of each context that leaves the pool (on its own thread, on its loop, or on a
short-lived thread), and closing the pool. `Pool` (pool.py) inherits it.
"""

from __future__ import annotations

import _thread
import math
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from . import housekeeping
from .context import ExecutionContext
from .logs import logger

if TYPE_CHECKING:
    import asyncio

    from .config import Config
    from .deadlines import DeadlineWatch
    from .engine import Engine
    from .pool import Pool

FREEZE_AFTER = 0.25  # seconds an idle child process runs on before it is stopped (SIGSTOP)
exiting = False  # set at interpreter exit: loops that stopped will not run again


class Retirement:
    """The retiring half of a `Pool`: the state it shares is the pool's own (declared here for types)."""

    function: Engine
    config: Config
    loop: asyncio.AbstractEventLoop | None
    closed: bool
    watch: DeadlineWatch
    _lock: threading.Lock
    _idle: dict[str, ExecutionContext]
    _warm: list[ExecutionContext]
    _partial: dict[str, ExecutionContext]
    _idle_in_partial: bool
    _contexts: dict[str, ExecutionContext]
    _retiring: set[str]
    _waiters: deque[Any]
    _closing: list[Any]
    _reap_scheduled: bool
    _reaper: _Reaper
    _freezes: bool
    _idle_for: float

    def _expired(self, now: float) -> list[ExecutionContext]:
        raise NotImplementedError  # (the pool's: it knows how contexts are kept)

    def end_held_invocations(self) -> None:
        """At exit: end the invocations still held open by what their handler returned (a WSGI body)."""
        global exiting
        exiting = True
        for ctx in list(self._contexts.values()):
            holder = ctx.holder() if ctx.holder is not None and ctx.active else None
            if holder is not None:
                holder.end_at_exit()

    def reap(self) -> float:
        """Retire contexts idle longer than `idle_ttl`; freeze idle child processes (housekeeping
        thread). Returns when to look next (inf: when a release asks for it).

        A loop's pool is reaped on its loop (see the module's docstring), which then schedules
        the next look itself.
        """
        if self.closed:
            return math.inf
        loop = self.loop
        if loop is None:
            return self._reap_here(aside=True)
        if not self._reap_scheduled:
            self._reap_scheduled = True
            try:
                loop.call_soon_threadsafe(self._reap_here)
            except RuntimeError:  # the loop is closed: nothing runs on it any more
                return self._reap_here(aside=True)
        return math.inf

    def _reap_here(self, aside: bool = False) -> float:
        """`aside`: on the housekeeping thread, which must not wait for a SHUTDOWN (see _close_aside)."""
        self._reap_scheduled = False
        now = time.monotonic()
        ttl = self.config.idle_ttl
        upcoming = math.inf
        with self._lock:
            expired = self._expired(now)
            for ctx in self._idle.values():  # (in release order: the first one expires first)
                upcoming = ctx.idle_since + ttl
                break
            if self._idle_in_partial:
                for ctx in self._partial.values():
                    if ctx.active == 0:
                        upcoming = min(upcoming, ctx.idle_since + ttl)
            if self._freezes:
                for ctx in (*self._idle.values(), *self._warm):
                    if now - ctx.idle_since >= FREEZE_AFTER:
                        ctx.freeze()  # under the lock: nobody can be handed the context meanwhile
                    else:
                        upcoming = min(upcoming, ctx.idle_since + FREEZE_AFTER)
        if aside:
            for ctx in expired:
                logger.info("retiring %r: idle for more than %g s", ctx, ttl)
                self.function.retired(ctx)
                self._close_aside(ctx)
        else:
            self._retire_expired(expired)
            if upcoming < self._reaper.due:
                housekeeping.schedule(self._reaper, upcoming)
        return upcoming

    def _close_aside(self, ctx: ExecutionContext) -> None:
        """SHUTDOWN of a loop-less context, off the housekeeping thread: on the context's own
        thread, or (a child process: SIGTERM, then a grace period) on a short-lived one."""
        if ctx.has_worker:
            self._shutdown(ctx, counted=True)
            return
        closing = _Closing(ctx)
        try:
            _thread.start_new_thread(closing.run, ())
        except RuntimeError:  # pragma: no cover - out of threads: here, then
            closing.run()
        else:
            self._closing_add(closing)
        self._retiring.discard(ctx.id)

    def _retire_expired(self, expired: list[ExecutionContext]) -> None:
        for ctx in expired:
            logger.info("retiring %r: idle for more than %g s", ctx, self.config.idle_ttl)
            self._shutdown(ctx)

    def _shutdown(self, ctx: ExecutionContext, counted: bool = False) -> None:
        """Run SHUTDOWN for a context that left the pool: on its own thread, or on its loop."""
        try:
            self._start_shutdown(ctx, counted)
        finally:
            self._retiring.discard(ctx.id)  # (its SHUTDOWN is in `_closing` now, or done)

    def _start_shutdown(self, ctx: ExecutionContext, counted: bool) -> None:
        if not counted:
            self.function.retired(ctx)
        loop = self.loop
        if loop is None or loop.is_closed() or (exiting and not loop.is_running()):
            self._close_off_loop(ctx)
            return
        import asyncio

        begun = []

        async def close() -> None:
            begun.append(True)
            try:
                await ctx.aclose()
            finally:
                if ctx.has_worker:
                    # (Cancelled before SHUTDOWN got to its private loop, as when `asyncio.run` ends
                    # with this task pending: that loop is closed on its thread, after what runs there.)
                    ctx.worker.submit(ctx.release_private_loop)
                    ctx.worker.stop()

        def unless_begun(_task: object) -> None:
            if not begun:  # the loop ended (`asyncio.run` returning) before the task's first step
                self._close_off_loop(ctx)

        if _running_loop() is loop:
            task = loop.create_task(close())
            task.add_done_callback(unless_begun)
            self._closing_add(task)
        else:
            self._closing_add(asyncio.run_coroutine_threadsafe(close(), loop))

    def _close_off_loop(self, ctx: ExecutionContext) -> None:
        """SHUTDOWN without the pool's loop (none, or it has ended): on the context's thread, or here."""
        if ctx.has_worker:
            closing = ctx.worker.submit(ctx.close_here)
            ctx.worker.stop()
            if ctx.worker.abandoned:
                # Its thread is still inside handler code: SHUTDOWN runs if and when that returns,
                # and the scratch directory goes at exit at the latest. Nobody waits for it.
                logger.warning("%r: SHUTDOWN waits for its abandoned thread to return", ctx)
                ctx.release_private_loop()
            else:
                self._closing_add(closing)
        elif _running_loop() is not None:  # (another loop runs here: its async hooks need their own)
            self._close_aside(ctx)
        else:
            ctx.close_here()

    def close(self) -> None:
        """Stop handing out contexts and retire the idle ones; busy ones retire when they finish.

        Called from another thread than that of a loop that is running, a loop's pool stops
        handing out contexts at once and retires them on its loop, soon after this returns (see
        the module's docstring).
        """
        loop = self.loop
        if loop is not None and loop.is_running() and _running_loop() is not loop:
            self.closed = True  # (one store: the loop's thread sees it at its next take)
            try:
                loop.call_soon_threadsafe(self._close_here)
                return
            except RuntimeError:  # closed meanwhile: nothing runs on it any more
                pass
        self._close_here()

    def _close_here(self) -> None:
        with self._lock:
            self.closed = True
            shared = [ctx for ctx in self._partial.values() if ctx.active == 0]
            idle = [*self._idle.values(), *self._warm, *shared]
            self._idle.clear()
            self._warm.clear()
            for ctx in shared:
                del self._partial[ctx.id]
            for ctx in idle:
                ctx.retired = True
                del self._contexts[ctx.id]
                self._retiring.add(ctx.id)
            waiters, self._waiters = list(self._waiters), deque()
        housekeeping.schedule(self._reaper, -math.inf)  # (off the schedule: the thread stops once no pool is open)
        self.watch.close()
        for waiter in waiters:
            waiter.wake()
        for ctx in idle:
            self._shutdown(ctx)

    def pending(self) -> list[str]:
        """What a graceful shutdown still waits for."""
        busy = [f"{ctx!r} (busy)" for ctx in list(self._contexts.values())]  # (another thread may change it)
        retiring = [f"context {context_id} (retiring)" for context_id in list(self._retiring)]
        closing = [repr(item) for item in self._closing if not _finished(item)]
        return busy + retiring + closing

    def finished(self) -> bool:
        """Closed, and no context left to release: its counters will not change again."""
        with self._lock:
            return self.closed and not self._contexts

    def settled(self) -> bool:
        # (Read only: SHUTDOWNs are added from other threads meanwhile, see _closing_add.)
        return not self._contexts and not self._retiring and all(_finished(item) for item in list(self._closing))

    def _closing_add(self, item: Any) -> None:
        """Keep a SHUTDOWN under way (what `settled()` waits for), dropping those finished."""
        with self._lock:
            self._closing = [*(kept for kept in self._closing if not _finished(kept)), item]


def _finished(item: Any) -> bool:
    if hasattr(item, "done"):
        done = item.done
        return bool(done() if callable(done) else not done.locked())
    return True


def _running_loop() -> asyncio.AbstractEventLoop | None:
    import sys

    module = sys.modules.get("asyncio")
    if module is None:
        return None
    try:
        loop: asyncio.AbstractEventLoop = module.get_running_loop()
    except RuntimeError:
        return None
    return loop


class _Reaper(housekeeping.Chore):
    """A pool's idle expiry, a chore of the housekeeping thread (it holds the pool weakly)."""

    __slots__ = ("_pool",)

    def __init__(self, pool: Pool) -> None:
        super().__init__()
        self._pool = weakref.ref(pool)

    def run(self, now: float) -> float:
        pool = self._pool()
        return math.inf if pool is None else pool.reap()


class _Closing:
    """The SHUTDOWN of a context without a thread of its own, running on a short-lived thread
    (what `Pool.settled()` waits for)."""

    __slots__ = ("ctx", "done")

    def __init__(self, ctx: ExecutionContext) -> None:
        self.ctx = ctx
        self.done = _thread.allocate_lock()
        self.done.acquire()

    def __repr__(self) -> str:
        return f"<SHUTDOWN of {self.ctx!r}>"

    def run(self) -> None:
        try:
            self.ctx.close_here()
        except Exception:  # pragma: no cover - close_here logs hook failures itself
            logger.exception("SHUTDOWN failed for %r", self.ctx)
        finally:
            self.done.release()
