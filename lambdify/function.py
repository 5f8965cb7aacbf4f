"""`@handler` and `Function`: a handler plus its configuration, invoked through the pool."""

from __future__ import annotations

import atexit
import functools
import itertools
import os
import threading
import time
import weakref
from _thread import get_ident
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, overload

from .config import _NAME_RE, Config, build_config, function_arn
from .context import new_request_id
from .errors import TooManyRequests, failure_counter
from .invocation import check_event, run_async, run_on_owned_loop, run_sync
from .limits import apply_memory_backstop, request_restart
from .logs import logger
from .pool import Pool

if TYPE_CHECKING:
    import asyncio

    from ._types import ASGIApp
    from .context import ExecutionContext
    from .wsgi import FunctionWSGI

__all__ = ["Function", "handler", "stats"]

F = TypeVar("F", bound=Callable[..., Any])
_CO_COROUTINE = 0x80
_COUNTERS = (
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
_functions: weakref.WeakSet[Function[Any]] = weakref.WeakSet()
_serials = itertools.count()
MAIN_THREAD: Final = "main thread"  # the key of the pool whose contexts run inline on the main thread
PORTABLE: Final = "portable"  # the key of the pool for event loops other than asyncio's (trio, via anyio)


def _is_async(target: Any) -> bool:
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


class Function(Generic[F]):
    """A handler plus its configuration. Made by `@handler`; invoke it like a Lambda function.

    ```python
    @handler(timeout=5)
    def echo(event, context):
        return event

    echo.invoke({"x": 1})          # from sync code
    await echo.ainvoke({"x": 1})   # from async code, on the caller's event loop
    ```
    """

    def __init__(self, func: F, config: Config) -> None:
        if not callable(func):
            raise TypeError(f"@handler needs a function or a class, got {func!r}")
        self._func = func
        self.config = config
        self._is_class = isinstance(func, type)
        self._is_async = _is_async(func)
        self._pools: dict[Any, Pool] = {}  # by event loop; None: sync callers; MAIN_THREAD: inline
        self._pools_lock = threading.Lock()
        self._here: Pool | None = None  # the pool last used from a running loop (see _loop_pool)
        self._stats_lock = threading.Lock()
        self._stats: dict[str, Any] = dict.fromkeys(_COUNTERS, 0)
        self._stats["init_ms_last"] = None
        self._resource_stats: dict[str, dict[str, int]] = {}
        # Each pool counts its invocations under its own lock (the one it takes to release a
        # context anyway); stats() adds them up. A closed pool is folded into `_stats` once it
        # holds no context (no release can come after that), so pools of closed loops do not pile up.
        self._counting: list[Pool] = []
        self._abandoned_alive = 0
        self._unhealthy: str | None = None
        self._asgi: ASGIApp | None = None
        self._wsgi: FunctionWSGI | None = None
        self.arn = function_arn(config.name)
        self.log_group_name = f"/aws/lambda/{config.name}"
        self._serial = next(_serials)  # (creation order, for lambdify.stats())
        _functions.add(self)

    def __repr__(self) -> str:
        return f"<Function {self.config.name} timeout={self.config.timeout:g}s isolation={self.config.isolation}>"

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def asgi(self) -> ASGIApp:
        """This function as an ASGI app: every request is an invocation (see `event_format`)."""
        if self._asgi is None:
            from .endpoint import FunctionASGI

            self._asgi = FunctionASGI(self)
        return self._asgi

    @property
    def wsgi(self) -> FunctionWSGI:
        """This function as a WSGI app (for gunicorn, uWSGI, waitress...): every request is an invocation."""
        if self._wsgi is None:
            from .wsgi import FunctionWSGI

            self._wsgi = FunctionWSGI(self)
        return self._wsgi

    def init(self, fn: Callable[[ExecutionContext], Any]) -> Callable[[ExecutionContext], Any]:
        """Set the INIT code with a decorator: `@fn.init def setup(ctx): ...` (sync or async)."""
        self.config = self.config.replace(init=fn)
        return fn

    # -- invoking -------------------------------------------------------------------------

    def invoke(self, event: Any) -> Any:
        """One invocation through the pool (cold or warm); returns after background work has finished.

        Raises `FunctionError` (or a subclass) when the invocation fails, `TooManyRequests` when
        throttled.
        """
        if self.config.isolation != "process":  # (a child's event is checked as it is encoded, once)
            check_event(event)  # TypeError if not JSON, ValueError over Lambda's 6 MB request limit
        return self._invoke(event, new_request_id(), None)

    async def ainvoke(self, event: Any) -> Any:
        """`invoke()` for async callers: runs on the caller's event loop."""
        if self.config.isolation != "process":
            check_event(event)
        self._check_health()
        return await run_async(self, event, new_request_id())

    def __call__(self, event: Any, context: Any) -> Any:
        """The AWS Lambda entry point (`module.fn` as the Lambda handler setting).

        On AWS the invocation runs in this process with AWS's context; elsewhere it behaves like
        `invoke()` with the given context's request id and deadline.
        """
        if os.environ.get("AWS_LAMBDA_RUNTIME_API"):
            from .aws import run_on_aws

            return run_on_aws(self, event, context)
        if self.config.isolation != "process":
            check_event(event)
        request_id = getattr(context, "aws_request_id", None) or new_request_id()
        deadline = None
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if callable(remaining):
            deadline = time.monotonic() + remaining() / 1000
        return self._invoke(event, request_id, deadline)

    def _invoke(self, event: Any, request_id: str, deadline: float | None) -> Any:
        self._check_health()
        if self._is_async and self.config.isolation == "thread":
            return run_on_owned_loop(self, event, request_id, deadline)
        return run_sync(self, event, request_id, deadline)

    def _check_health(self) -> None:
        if self._unhealthy is not None:
            self._count("throttles")
            raise TooManyRequests(f"{self.config.name}: this worker stopped taking work ({self._unhealthy})")

    # -- pools ----------------------------------------------------------------------------

    def _pool(self, loop: Any) -> Pool:
        pool = self._pools.get(loop)
        if pool is None or pool.closed:
            with self._pools_lock:
                pool = self._pools.get(loop)
                if pool is None or pool.closed:
                    pool = self._new_pool(loop)
        return pool

    def _main_thread_pool(self) -> Pool:
        """The pool of contexts that run inline on the process's main thread (see isolation.main_thread)."""
        pool = self._pools.get(MAIN_THREAD)
        if pool is None or pool.closed:
            with self._pools_lock:
                pool = self._pools.get(MAIN_THREAD)
                if pool is None or pool.closed:
                    if self.config.memory_mb is not None:
                        apply_memory_backstop(self.config.memory_mb)
                    pool = self._pools[MAIN_THREAD] = Pool(self, None, main_thread=True)
        return pool

    def _loop_pool(self) -> Pool:
        """The pool of the event loop running in this thread (call from a coroutine).

        On Python 3.11 `asyncio.get_running_loop()` makes a `getpid` system call; while the last
        loop used still runs in this thread (the usual case: a server runs one loop per worker),
        it is the running one, which asyncio's own loops tell without a system call.
        """
        pool = self._here
        if pool is None or pool.closed or getattr(pool.loop, "_thread_id", None) != get_ident():
            import asyncio

            pool = self._here = self._pool(asyncio.get_running_loop())
        return pool

    @property
    def _context_class(self) -> type[ExecutionContext]:
        if self.config.isolation == "process":
            from .isolation.process import ProcessContext

            return ProcessContext
        from .context import ExecutionContext

        return ExecutionContext

    def _new_pool(self, loop: Any) -> Pool:
        if self.config.isolation == "process":
            from .isolation.process import handler_location

            handler_location(self)  # fail now, clearly, if a child could not import the handler
        elif self.config.memory_mb is not None:
            apply_memory_backstop(self.config.memory_mb)
        if loop == PORTABLE:
            pool = self._pools[loop] = Pool(self, None)
            return pool
        if loop is not None:
            from .background import install_task_factory

            install_task_factory(loop)
            # A pool whose loop has closed cannot be used again: retire what it holds.
            for old_loop, old in list(self._pools.items()):
                if old_loop not in (None, MAIN_THREAD, PORTABLE) and old_loop.is_closed():
                    del self._pools[old_loop]
                    old.close()
        pool = self._pools[loop] = Pool(self, loop)
        return pool

    def start(self) -> None:
        """Initialise the `provisioned` contexts now (servers call this at startup)."""
        if self._is_async:
            import asyncio

            loop, _ = _owned_loop()
            asyncio.run_coroutine_threadsafe(self.astart(), loop).result()
            return
        self.provision(None)

    def provision(self, key: Any) -> None:
        """Initialise the `provisioned` contexts of the loop-less pool under `key` (None: sync callers)."""
        pool = self._pool(key)
        for _ in range(self.config.provisioned - _provisioned(pool)):
            with pool._lock:
                pool._reserved += 1
            pool._create(provisioned=True)

    async def astart(self) -> None:
        """`start()` on the caller's event loop."""
        import asyncio

        pool = self._pool(asyncio.get_running_loop())
        for _ in range(self.config.provisioned - _provisioned(pool)):
            with pool._lock:
                pool._reserved += 1
            await pool._acreate(provisioned=True)

    # -- shutting down --------------------------------------------------------------------

    def shutdown(self) -> None:
        """Retire every context, after in-flight invocations and their background work have finished."""
        pools, deadline = self._close_pools()
        delay = 0.0  # (SHUTDOWN usually takes well under a millisecond: look again soon, then less often)
        while self._still_closing(pools, deadline):
            time.sleep(delay)
            delay = min(0.005, delay * 2 or 0.0002)

    async def ashutdown(self) -> None:
        """`shutdown()` for async callers."""
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
            pools = list(self._pools.values())
            self._pools.clear()
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
        stats["contexts_alive"] = sum(pool.alive for pool in list(self._pools.values()))
        stats["abandoned_threads_alive"] = self._abandoned_alive
        stats["resources"] = {name: dict(counts) for name, counts in self._resource_stats.items()}
        return stats

    def _contexts(self) -> list[dict[str, Any]]:
        """Each live context of this worker process: id, state, age, invocations."""
        now = time.time()
        contexts = []
        for pool in list(self._pools.values()):
            for ctx in list(pool._contexts.values()):
                contexts.append(
                    {
                        "id": ctx.id,
                        "pid": os.getpid(),
                        "state": "busy" if ctx.active else "idle",
                        "age_s": round(now - ctx.created_at, 3),
                        "invocations": ctx.invocations,
                        "provisioned": ctx.provisioned,
                    }
                )
        return contexts

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    def _invoked(self, cold: bool, failure: BaseException | None, status: str | None) -> None:
        """Count an invocation that ran outside any pool (on AWS)."""
        with self._stats_lock:
            self._stats["cold_starts" if cold else "warm_starts"] += 1  # their sum is "invocations"
            if failure is not None:
                self._stats[failure_counter(failure, status)] += 1

    def _count_pool(self, pool: Pool) -> None:
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

    def _cold_start(self, init_ms: float) -> None:
        with self._stats_lock:
            self._stats["init_ms_last"] = round(init_ms, 3)

    def _retired(self) -> None:
        self._count("contexts_retired")

    def _unwound(self) -> None:
        """An abandoned thread finished its call after all: it no longer counts against the worker."""
        with self._stats_lock:
            self._abandoned_alive -= 1
            if self._abandoned_alive <= self.config.max_abandoned_threads:
                self._unhealthy = None

    def _count_abandoned(self) -> None:
        with self._stats_lock:
            self._stats["abandoned_threads"] += 1
            self._abandoned_alive += 1
            alive = self._abandoned_alive
        if alive > self.config.max_abandoned_threads and self._unhealthy is None:
            self._unhealthy = f"{alive} threads abandoned after timeouts, over max_abandoned_threads"
            request_restart(f"{self.config.name}: {self._unhealthy}")


def stats() -> dict[str, dict[str, Any]]:
    """Every Function and middleware of this process, by name: `fn.stats()` plus its contexts.

    ```python
    import lambdify
    lambdify.stats()["app"]["invocations"]      # e.g. an ASGIMiddleware nobody holds
    ```
    Two functions with one name (two middlewares left at the default "app") are told apart
    as `app`, `app#2`, ...
    """
    report: dict[str, dict[str, Any]] = {}
    for function in sorted(_functions, key=lambda fn: fn._serial):
        key, n = function.config.name, 1
        while key in report:
            n += 1
            key = f"{function.config.name}#{n}"
        report[key] = {**function.stats(), "contexts": function._contexts()}
    return report


def _provisioned(pool: Pool) -> int:
    return sum(1 for ctx in pool._contexts.values() if ctx.provisioned)


def _owned_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    from .invocation import owned_loop

    return owned_loop()


def _reset_after_fork() -> None:
    # The parent's contexts (threads, connections, scratch dirs) belong to the parent: forget
    # them without closing anything, and create new ones on demand.
    for function in list(_functions):
        for pool in function._pools.values():
            pool.closed = True  # the parent's: whoever kept one (a middleware) must not use it here
        function._here = None
        function._pools = {}
        function._pools_lock = threading.Lock()
        function._stats_lock = threading.Lock()
        function._abandoned_alive = 0
        function._unhealthy = None
    from .pool import _janitor

    _janitor.reset_after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


@atexit.register
def _shutdown_all() -> None:
    # Contexts still alive at exit are retired like any other: hooks run, resources close.
    from . import pool

    pool.exiting = True
    for function in list(_functions):
        for each in list(function._pools.values()):
            for ctx in list(each._contexts.values()):
                holder = ctx.holder() if ctx.holder is not None and ctx.active else None
                if holder is not None:
                    holder.end_at_exit()  # (a response body still open: its invocation ends now)
    for function in list(_functions):
        if function._pools:
            function.config = function.config.replace(shutdown_grace=min(function.config.shutdown_grace, 5.0))
            function.shutdown()


_IDENTITY: Final = ("__module__", "__name__", "__qualname__", "__doc__")


def _copy_identity(function: Function[Any], target: Any) -> None:
    """Give a decorated function its handler's name, docstring and `__wrapped__`, and nothing else.

    Not `functools.update_wrapper`: it also copies the target's `__dict__` over the Function's own
    attributes (a Flask app's `config` would replace ours).
    """
    for attr in _IDENTITY:
        value = getattr(target, attr, None)
        if isinstance(value, str):
            setattr(function, attr, value)
    function.__wrapped__ = target  # type: ignore[attr-defined]


@overload
def handler(func: F, /) -> Function[F]: ...


@overload
def handler(
    func: None = None,
    /,
    *,
    name: str | None = None,
    timeout: float = ...,
    memory_mb: int | None = ...,
    tmp_mb: int = ...,
    init: Callable[[ExecutionContext], Any] | None = ...,
    init_timeout: float = ...,
    idle_ttl: float = ...,
    concurrency: int | None = ...,
    max_contexts: int | None = ...,
    queue_timeout: float = ...,
    provisioned: int = ...,
    isolation: str = ...,
    event_format: str = ...,
    max_abandoned_threads: int = ...,
    shutdown_grace: float = ...,
    stray_tasks: str = ...,
) -> Callable[[F], Function[F]]: ...


def handler(func: F | None = None, /, **options: Any) -> Function[F] | Callable[[F], Function[F]]:
    """Turn a handler function (sync or async) or a class into a `Function`.

    ```python
    @handler
    def echo(event, context):
        return event

    @handler(timeout=5, memory_mb=256, init=setup)
    async def fetch(event, context): ...

    @handler(timeout=10)
    class Classifier:
        def __init__(self, ctx): self.model = load()      # INIT
        def __call__(self, event, context): return self.model(event)
        def close(self): ...                              # SHUTDOWN
    ```
    Options are validated here, so a bad value fails at import time.
    """

    def decorate(target: F) -> Function[F]:
        if not callable(target):
            raise TypeError(f"@handler needs a function or a class, got {target!r}")
        name = options.get("name") or getattr(target, "__name__", None) or type(target).__name__
        if not options.get("name") and not _NAME_RE.fullmatch(name):
            raise ValueError(
                f"{target!r} has no usable name ({name!r} is not a Lambda function name): pass name=, "
                "as in handler(name='my-function')(fn) or @handler(name='my-function')"
            )
        config = build_config(name, {**options, "name": name})
        function = Function(target, config)
        _copy_identity(function, target)
        if function._is_class and not any("__call__" in vars(k) for k in target.__mro__[:-1]):  # type: ignore[attr-defined]
            raise TypeError(f"class {target.__name__} needs a __call__(self, event, context) method")
        if function.config.concurrency != 1 and function.config.isolation == "process":
            raise ValueError(
                f"concurrency={function.config.concurrency} with isolation='process': a child process runs one "
                "invocation at a time (use max_contexts to run more at once)"
            )
        if function.config.concurrency != 1 and not function._is_async:
            raise ValueError(
                f"concurrency={function.config.concurrency} needs an async handler: a sync handler runs on its "
                "context's one thread, one invocation at a time (use max_contexts to run more at once)"
            )
        return function

    if func is not None:
        if options:
            raise TypeError("use @handler or @handler(**options), not both")
        return decorate(func)
    return decorate
