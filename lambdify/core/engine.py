"""The engine of one function: its handler and config, its pools of contexts, its counters.

A `Function` (the façade), a middleware's wrapped app and a `lambda_handler` each own one
engine. The engine never imports what uses it: it is handed its isolation backend (where a
context's code runs, `lambdify.isolation`), and everything above reaches it through the
methods here rather than through private state.
"""

from __future__ import annotations

import functools
import threading
import time
from _thread import get_ident
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from .config import Config, function_arn
from .errors import TooManyRequests, failure_counter
from .invoke_portable import in_thread, on_asyncio
from .logs import logger
from .memory import apply_memory_backstop
from .pool import INVOCATION_COUNTERS, Pool
from .recorder import Recorder, context_entry, state_of, worker_peak_mb
from .registry import register
from .restart import request_restart

if TYPE_CHECKING:
    from .context import ExecutionContext

__all__ = ["COUNTERS", "MAIN_THREAD", "PORTABLE", "Backend", "Engine"]

_CO_COROUTINE: Final = 0x80
#: The counters of `Engine.stats()` (what `lambdify.stats()` adds up across workers too).
COUNTERS: Final = (
    "invocations",
    "cold_starts",
    "warm_starts",
    "errors",
    "timeouts",
    "oom",
    "throttles",
    "contexts_retired",
    "deferred_errors",
    "abandoned_threads",
    "init_errors",
)
MAIN_THREAD: Final = "main thread"  # the key of the pool whose contexts run inline on the main thread
PORTABLE: Final = "portable"  # the key of the pool for event loops other than asyncio's (trio, via anyio)


class Backend(Protocol):
    """Where a function's code runs: a thread per context, or a child process per context.

    `lambdify.isolation` provides the two; the engine only calls what is declared here.
    """

    name: str
    context_class: type[ExecutionContext]
    #: Drivers that replace the engine's own (a child process runs the handler); None: run here.
    run_sync: Callable[..., Any] | None
    run_async: Callable[..., Awaitable[Any]] | None

    def worker(self, name: str) -> Any:
        """A new dedicated thread for a context's sync code."""
        ...

    def main_thread_worker(self) -> Any:
        """The process's main thread, as a context's thread (WSGI inline)."""
        ...

    def check(self, engine: Engine) -> None:
        """Fail now, clearly, if this backend cannot run `engine`'s handler."""
        ...


def is_async(target: Any) -> bool:
    """Whether calling `target` returns a coroutine (checked without importing `inspect`)."""
    if isinstance(target, type):
        target = getattr(target, "__call__", None)  # noqa: B004 - the class form's __call__
    while isinstance(target, functools.partial):
        target = target.func
    code = getattr(target, "__code__", None)
    if code is None and target is not None and not hasattr(target, "__func__"):
        code = getattr(type(target).__call__, "__code__", None)
    func = getattr(target, "__func__", target)
    code = code or getattr(func, "__code__", None)
    return bool(code is not None and code.co_flags & _CO_COROUTINE)


class Counters:
    """Invocation counters kept by one thread without a lock (as a loop's pool keeps its own), added
    up by `Engine.stats()`: the runtime thread's under `lambda_handler`."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = dict.fromkeys(INVOCATION_COUNTERS, 0)

    def finished(self) -> bool:
        return False


class Engine:
    """One function's handler, config and isolation backend, its pools (one per event loop, one
    for sync callers, one for the main thread) and its counters."""

    def __init__(self, func: Callable[..., Any], config: Config, backend: Backend, owner: Any = None) -> None:
        if not callable(func):
            raise TypeError(f"@handler needs a function or a class, got {func!r}")
        self.func = func
        self.config = config
        self.backend = backend
        #: What users hold: the `Function`, or the engine itself for a middleware's app.
        self.owner = self if owner is None else owner
        self.is_class = isinstance(func, type)
        self.is_async = is_async(func)
        self.pools: dict[Any, Pool] = {}  # by event loop; None: sync callers; MAIN_THREAD: inline
        self._pools_lock = threading.Lock()
        self._here: Pool | None = None  # the pool last used from a running loop (see loop_pool)
        self._stats_lock = threading.Lock()
        self._stats: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
        self._stats["init_ms_last"] = None
        self.resource_stats: dict[str, dict[str, int]] = {}
        self.recorder = Recorder()  # recent invocations, latency histogram, retired contexts
        # Each pool counts its invocations under its own lock (the one it takes to release a
        # context anyway); stats() adds them up. A closed pool is folded into `_stats` once it
        # holds no context (no release can come after that), so pools of closed loops do not pile up.
        self._counting: list[Pool | Counters] = []
        self._abandoned_alive = 0
        self.unhealthy: str | None = None
        self.arn = function_arn(config.name)
        self.log_group_name = f"/aws/lambda/{config.name}"
        self._serial = register(self)  # (creation order, for lambdify.stats())

    def __repr__(self) -> str:
        return f"<Engine {self.config.name} timeout={self.config.timeout:g}s isolation={self.backend.name}>"

    @property
    def name(self) -> str:
        return self.config.name

    def check_health(self) -> None:
        """`TooManyRequests` once this worker stopped taking work (too many abandoned threads)."""
        if self.unhealthy is not None:
            self.count("throttles")
            raise TooManyRequests(f"{self.config.name}: this worker stopped taking work ({self.unhealthy})")

    # -- pools ----------------------------------------------------------------------------

    def pool(self, loop: Any) -> Pool:
        """The pool for `loop` (an asyncio loop, None for sync callers, or PORTABLE)."""
        pool = self.pools.get(loop)
        if pool is None or pool.closed:
            with self._pools_lock:
                pool = self.pools.get(loop)
                if pool is None or pool.closed:
                    pool = self._new_pool(loop)
        return pool

    def main_thread_pool(self) -> Pool:
        """The pool of contexts that run inline on the process's main thread (see isolation.main_thread)."""
        pool = self.pools.get(MAIN_THREAD)
        if pool is None or pool.closed:
            with self._pools_lock:
                pool = self.pools.get(MAIN_THREAD)
                if pool is None or pool.closed:
                    if self.config.memory_mb is not None:
                        apply_memory_backstop(self.config.memory_mb)
                    pool = self.pools[MAIN_THREAD] = Pool(self, None, main_thread=True)
        return pool

    def loop_pool(self) -> Pool:
        """The pool of the event loop running in this thread (call from a coroutine).

        On Python 3.11 `asyncio.get_running_loop()` makes a `getpid` system call; while the last
        loop used still runs in this thread (the usual case: a server runs one loop per worker),
        it is the running one. The pool remembers its loop's thread, and asks the loop whether it
        runs (uvloop's loops have no `_thread_id` to read).
        """
        pool = self._here
        if pool is None or pool.closed or pool.thread != get_ident() or not pool.loop_running():
            import asyncio

            pool = self._here = self.pool(asyncio.get_running_loop())
        return pool

    def portable_pool(self) -> Pool:
        """The pool for event loops other than asyncio's (trio, through anyio): loop-less contexts."""
        return self.pool(PORTABLE)

    def _new_pool(self, loop: Any) -> Pool:
        self.backend.check(self)
        if self.config.memory_mb is not None and self.config.isolation == "thread":
            apply_memory_backstop(self.config.memory_mb)
        if loop == PORTABLE:
            pool = self.pools[loop] = Pool(self, None)
            return pool
        if loop is not None:
            from .background import install_task_factory

            install_task_factory(loop)
            # A pool whose loop has closed cannot be used again: retire what it holds.
            for old_loop, old in list(self.pools.items()):
                if old_loop not in (None, MAIN_THREAD, PORTABLE) and old_loop.is_closed():
                    del self.pools[old_loop]
                    old.close()
        pool = self.pools[loop] = Pool(self, loop)
        return pool

    def start(self) -> None:
        """Initialise the `provisioned` contexts now (servers call this at startup)."""
        if self.is_async:
            import asyncio

            from .invoke_async import owned_loop

            loop, _ = owned_loop()
            asyncio.run_coroutine_threadsafe(self.astart(), loop).result()
            return
        self.provision(None)

    def provision(self, key: Any) -> None:
        """Initialise the `provisioned` contexts of the loop-less pool under `key` (None: sync callers)."""
        pool = self.pool(key)
        for _ in range(self.config.provisioned - pool.provisioned()):
            pool.reserve()
            pool.create(provisioned=True)

    async def astart(self) -> None:
        """`start()` on the caller's event loop (off asyncio, the portable pool's, in a worker thread)."""
        if not on_asyncio():
            await in_thread(self.provision, PORTABLE)
            return
        import asyncio

        pool = self.pool(asyncio.get_running_loop())
        for _ in range(self.config.provisioned - pool.provisioned()):
            pool.reserve()
            await pool.acreate(provisioned=True)

    # -- shutting down --------------------------------------------------------------------

    def shutdown(self) -> None:
        """Retire every context, after in-flight invocations and their background work have finished."""
        pools, deadline = self._close_pools()
        delay = 0.0  # (SHUTDOWN usually takes well under a millisecond: look again soon, then less often)
        while self._still_closing(pools, deadline):
            time.sleep(delay)
            delay = min(0.005, delay * 2 or 0.0002)

    async def ashutdown(self) -> None:
        """`shutdown()` for async callers (off asyncio, in a worker thread)."""
        if not on_asyncio():
            await in_thread(self.shutdown)
            return
        import asyncio

        pools, deadline = self._close_pools()
        delay = 0.0  # (a close handed to this very loop runs at the first yield)
        while self._still_closing(pools, deadline):  # noqa: ASYNC110 - pools settle from other threads too
            await asyncio.sleep(delay)
            delay = min(0.005, delay * 2 or 0.0002)
        await asyncio.sleep(0)  # (tasks that SHUTDOWN cancelled finish cancelling before this returns)

    def _close_pools(self) -> tuple[list[Pool], float]:
        """Take every pool out of service; SHUTDOWN starts for idle contexts, busy ones follow."""
        with self._pools_lock:
            pools = list(self.pools.values())
            self.pools.clear()
        for pool in pools:
            pool.close()
        return pools, time.monotonic() + self.config.shutdown_grace

    def _still_closing(self, pools: list[Pool], deadline: float) -> bool:
        """Whether to wait on; past the grace period, name everything unfinished and stop waiting."""
        if all(pool.settled() for pool in pools):
            return False
        if time.monotonic() <= deadline:
            return True
        for pool in pools:
            for item in pool.pending():
                logger.error(
                    "%s: shutdown grace of %g s passed; still unfinished: %s",
                    self.config.name,
                    self.config.shutdown_grace,
                    item,
                )
        return False

    # -- statistics -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters since the function was created (per worker process)."""
        with self._stats_lock:
            stats = dict(self._stats)
            for pool in self._counting:
                for key, n in pool.counts.items():
                    stats[key] += n
        stats["invocations"] = stats["cold_starts"] + stats["warm_starts"]
        stats["contexts_alive"] = sum(pool.alive for pool in list(self.pools.values()))
        stats["abandoned_threads_alive"] = self._abandoned_alive
        stats["resources"] = {name: dict(counts) for name, counts in self.resource_stats.items()}
        return stats

    def contexts(self) -> list[dict[str, Any]]:
        """Each context of this worker process (in INIT, live, or recently retired): id, pid, state
        (`init`, `busy`, `idle`, `frozen`, `retired`), age, invocations, init and last durations, peak memory."""
        now = time.time()
        peak = worker_peak_mb() if self.config.isolation == "thread" else None
        contexts = []
        for pool in list(self.pools.values()):
            for ctx in list(pool.starting.values()):
                contexts.append(context_entry(ctx, "init", now, peak))
            for ctx in pool.contexts():
                contexts.append(context_entry(ctx, state_of(ctx), now, peak))
        contexts.extend(self.recorder.retired)
        return contexts

    def snapshot(self, lines: Any = None) -> dict[str, Any]:
        """`stats()` plus the contexts, the recent invocations (with their log lines, given
        `lines(request_id)`) and the latency histogram: this function's entry in `lambdify.stats()`."""
        return {
            **self.stats(),
            "contexts": self.contexts(),
            "recent": self.recorder.invocations(lines),
            "latency": self.recorder.latency(),
        }

    def count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    def invoked(self, cold: bool, failure: BaseException | None, status: str | None) -> None:
        """Count an invocation that ran outside any pool (on AWS)."""
        with self._stats_lock:
            self._stats["cold_starts" if cold else "warm_starts"] += 1  # their sum is "invocations"
            if failure is not None:
                self._stats[failure_counter(failure, status)] += 1

    def count_pool(self, pool: Pool | Counters) -> None:
        """Register a new pool's counters (and fold those of finished pools into the totals)."""
        with self._stats_lock:
            counting = []
            for old in self._counting:
                if old.finished():
                    for key, n in old.counts.items():
                        self._stats[key] += n
                else:
                    counting.append(old)
            counting.append(pool)
            self._counting = counting

    def cold_started(self, init_ms: float) -> None:
        with self._stats_lock:
            self._stats["init_ms_last"] = round(init_ms, 3)

    def retired(self, ctx: ExecutionContext | None = None) -> None:
        self.count("contexts_retired")
        if ctx is not None:
            self.recorder.context_retired(ctx)

    def unwound(self) -> None:
        """An abandoned thread finished its call after all: it no longer counts against the worker."""
        with self._stats_lock:
            self._abandoned_alive -= 1
            if self._abandoned_alive <= self.config.max_abandoned_threads:
                self.unhealthy = None

    def count_abandoned(self) -> None:
        with self._stats_lock:
            self._stats["abandoned_threads"] += 1
            self._abandoned_alive += 1
            alive = self._abandoned_alive
        if alive > self.config.max_abandoned_threads and self.unhealthy is None:
            self.unhealthy = f"{alive} threads abandoned after timeouts, over max_abandoned_threads"
            request_restart(f"{self.config.name}: {self.unhealthy}")

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's contexts (threads, connections, scratch dirs) belong to
        the parent. Forget them without closing anything; new ones are created on demand."""
        for pool in self.pools.values():
            pool.closed = True  # the parent's: whoever kept one (a middleware) must not use it here
        self._here = None
        self.pools = {}
        self._pools_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._abandoned_alive = 0
        self.unhealthy = None
