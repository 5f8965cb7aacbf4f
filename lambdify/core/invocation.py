"""One invocation, start to finish: a context from the pool, the deadline, the handler, the
flush of background work, the limits, the log lines, and the context back to the pool.

Two drivers share the bookkeeping in `_Invocation`:

* `run_sync` — `invoke()` of a sync handler: the handler and its flush run on the context's
  thread while the caller waits for them with the deadline as timeout.
* `run_async` — `ainvoke()`, and `invoke()` of an async handler (on lambdify's own loop):
  the handler runs in the caller's task under `asyncio.timeout`, sync code on the context's
  thread.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from . import hooks, logs
from . import marshal as _json
from .background import cancel_stray_tasks, drop_deferred, flush, flush_here
from .context import LambdaContext
from .current import _current
from .errors import FunctionError, InvocationTimeout, MemoryLimitExceeded, TooManyRequests, failure_counter, stack_trace
from .memory import current_rss_mb, peak_rss_mb
from .restart import request_restart
from .scratch import scratch_usage_mb

if TYPE_CHECKING:
    import asyncio

    from .context import ExecutionContext
    from .engine import Engine
    from .pool import Pool


class _TimedOut(Exception):
    """Marks an invocation that passed its deadline."""


class Reported(Exception):
    """A failure already mapped to its FunctionError (e.g. by a child process)."""

    def __init__(self, failure: FunctionError) -> None:
        super().__init__(failure)
        self.failure = failure


_SCALARS: Final = frozenset((str, int, bool, float))  # exact types: JSON whatever their value
# Lambda's payload limits: "Request must be smaller than 6291456 bytes for the InvokeFunction
# operation" (1 MB for `Event`); a response may be 100 bytes more ("Response payload size (N bytes)
# exceeded maximum allowed payload size (6291556 bytes).", Function.ResponseSizeTooLarge).
MAX_REQUEST: Final = 6 * 1024 * 1024
MAX_EVENT_REQUEST: Final = 1024 * 1024
MAX_RESPONSE: Final = MAX_REQUEST + 100
_SMALL_INT: Final = 1 << 64  # an int below this in magnitude takes at most 21 characters


def ensure_json(obj: Any) -> int:
    """Raise TypeError/ValueError unless Lambda's runtime would marshal `obj`; else an upper bound
    of the bytes of its JSON (exact unless `obj` is a scalar or a plain object, `_plain_object`)."""
    if obj is None:
        return 4
    kind = type(obj)
    if kind is str:
        return 6 * len(obj) + 2
    if kind in _SCALARS and (kind is not int or -_SMALL_INT < obj < _SMALL_INT):
        return 24
    if kind is dict:
        bound = _plain_object(obj)
        if bound >= 0:
            return bound
    return _json.check(obj)


def _plain_object(obj: dict[Any, Any]) -> int:
    """An upper bound of the size of the JSON of `obj` if it is surely JSON: string keys, and values
    that are scalars, or objects or arrays of scalars (what an HTTP handler usually returns); else -1.
    Checked in Python, this costs a hello-world `fn.asgi` request 2-3% less than the C encoder's
    code, which nothing else in a server keeps warm. -1 means "ask the encoder", not "not JSON".

    The bound: 6 bytes a character of text (`\\u0000`), and 30 an entry (a key's quotes and
    separators, and a scalar: an int is plain below 2**64, 21 characters; a float takes 24)."""
    chars = 0
    entries = len(obj) + 1
    for key, value in obj.items():
        if type(key) is not str:
            return -1
        chars += len(key)
        if value is None:
            continue
        kind = type(value)
        if kind is str:
            chars += len(value)
        elif kind in _SCALARS:
            if kind is int and not -_SMALL_INT < value < _SMALL_INT:
                return -1
        elif kind is dict:
            entries += len(value)
            for inner_key, inner in value.items():
                if type(inner_key) is not str:
                    return -1
                chars += len(inner_key)
                if inner is None:
                    continue
                kind = type(inner)
                if kind is str:
                    chars += len(inner)
                elif kind not in _SCALARS or (kind is int and not -_SMALL_INT < inner < _SMALL_INT):
                    return -1
        elif kind is list:
            entries += len(value)
            for inner in value:
                if inner is None:
                    continue
                kind = type(inner)
                if kind is str:
                    chars += len(inner)
                elif kind not in _SCALARS or (kind is int and not -_SMALL_INT < inner < _SMALL_INT):
                    return -1
        else:
            return -1
    return 6 * chars + 30 * entries


def check_event(event: Any, limit: int = MAX_REQUEST) -> None:
    """TypeError unless `event` is JSON as Lambda's runtime has it; ValueError naming both sizes if
    its JSON is over `limit` bytes (Lambda's RequestTooLargeException). The JSON is measured only
    when the cheap bound of `ensure_json` passes the limit."""
    try:
        size = ensure_json(event)
        if size > limit:
            size = len(_json.marshal(event))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the event must be JSON-serialisable: {exc}") from None
    if size > limit:
        raise ValueError(
            f"the event is {size} bytes of JSON, over Lambda's limit of {limit} bytes for a synchronous "
            "invocation (RequestTooLargeException)"
        )


Ready = Callable[[Any, "FunctionError | None"], Awaitable[None]]


class _Invocation:
    """The bookkeeping of one invocation: its LambdaContext, its outcome, and what ends it."""

    __slots__ = (
        "ceiling",
        "cold",
        "ctx",
        "escaped",
        "failure",
        "function",
        "lc",
        "logging",
        "marshal",
        "max_memory",
        "peak_before",
        "result",
        "retire",
        "started",
        "status",
        "timeout",
    )

    def __init__(
        self,
        function: Engine,
        ctx: ExecutionContext,
        request_id: str | None,
        cold: bool,
        deadline: float | None,
        log: list[str] | None = None,
    ) -> None:
        config = function.config
        if deadline is None:
            self.timeout = config.timeout
            deadline = time.monotonic() + config.timeout
        else:
            self.timeout = max(0.0, deadline - time.monotonic())
        self.function = function
        self.ctx = ctx
        self.cold = cold
        self.lc = lc = LambdaContext(ctx, request_id, deadline, cold)
        self.result: Any = None
        self.failure: FunctionError | None = None
        self.escaped: BaseException | None = None  # a KeyboardInterrupt, SystemExit...: passed on as is
        self.retire: str | None = None
        self.status: str | None = None
        self.marshal = True  # Lambda returns JSON; a wrapped web app's response is not
        self.max_memory: float | None = None  # measured elsewhere (a child process), for REPORT
        self.ceiling = ceiling = config.memory_mb
        self.peak_before = peak_rss_mb() if ceiling is not None else 0.0
        # START/END/REPORT cost a clock and a request id only when someone reads them. (The
        # logger's own check, without the call through logs.enabled(), once it exists.)
        real = logs._LazyLogger._real
        self.logging = logging = logs.enabled() if real is None else real.isEnabledFor(logs.INFO)
        if logging or log is not None:
            if log is not None:
                lc._log = log
                log.append(logs.start_line(lc.aws_request_id) + "\n")
            if logging:
                logs.log_start(lc.aws_request_id)
            self.started = time.perf_counter()

    def remaining(self) -> float:
        return self.lc._deadline - time.monotonic()

    def outcome(self, result: Any, error: BaseException | None) -> FunctionError | None:
        """What the caller gets, decided once the handler is done (before the flush, for HTTP surfaces)."""
        failure: FunctionError | None = None
        if error is None:
            if self.marshal and result is not None and not isinstance(result, bytes):  # bytes: sent as they are
                try:
                    size = ensure_json(result)
                    if size > MAX_RESPONSE:
                        size = len(_json.marshal(result))
                except (TypeError, ValueError) as exc:
                    message = f"Unable to marshal response: {exc}"
                    failure = FunctionError("Runtime.MarshalError", message, [], self.lc.aws_request_id)
                    logs.log_error(failure, self.lc._log)
                else:
                    if size > MAX_RESPONSE:
                        message = (
                            f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
                            f"({MAX_RESPONSE} bytes)."
                        )
                        failure = FunctionError("Function.ResponseSizeTooLarge", message, [], self.lc.aws_request_id)
                        logs.log_error(failure, self.lc._log)
        elif isinstance(error, _TimedOut):
            failure = InvocationTimeout(self.timeout, self.lc.aws_request_id)
            self.retire, self.status = "timed out", "timeout"
            logs.log_timeout(failure, self.lc._log)
        elif isinstance(error, Reported):
            failure = error.failure
            if isinstance(failure, MemoryLimitExceeded):
                self.retire = "out of memory"
            elif failure.error_type == "Runtime.ExitError":
                self.retire = "its process exited"
        elif isinstance(error, MemoryError):
            failure, self.retire = self._out_of_memory("an allocation failed (MemoryError)"), "out of memory"
        else:
            failure = FunctionError(type(error).__name__, str(error), stack_trace(error), self.lc.aws_request_id)
            failure.__cause__ = error
            logs.log_error(failure, self.lc._log)
        if self.ceiling is not None:
            failure = self._memory_check() or failure
        self.result, self.failure = result, failure
        return failure

    def escape(self, pool: Pool, exc: BaseException) -> None:
        """A BaseException that is not an Exception (KeyboardInterrupt, SystemExit, GeneratorExit)
        left the code: end the invocation as failed and retire the context; the caller re-raises `exc`."""
        self.retire = f"{type(exc).__name__} was raised"
        try:
            self.finish(pool, None, exc)
        except FunctionError:
            pass

    def _memory_check(self) -> MemoryLimitExceeded | None:
        ceiling = self.ceiling
        if ceiling is None or self.retire is not None:
            return None
        peak = peak_rss_mb()
        if peak > ceiling and peak > self.peak_before:
            self.retire = "out of memory"
            return self._out_of_memory(f"peak memory {peak:.0f} MB passed the {ceiling} MB ceiling")
        return None

    def finish(
        self, pool: Pool, result: Any = None, error: BaseException | None = None, *, decided: bool = False
    ) -> Any:
        """Apply the limits, log, release the context, and return the result or raise the failure."""
        ctx = self.ctx
        if decided and not isinstance(error, _TimedOut):
            if self.ceiling is not None:
                # The flush ran after the caller had its answer; it can still break the limits.
                self.failure = self.failure or self._memory_check()
        elif error is None and result is None and self.ceiling is None:
            pass  # nothing to marshal or check (a wrapped app's invocation): the outcome stands
        else:
            self.outcome(result, error)
        if ctx._tmp is not None and self.retire is None:
            tmp_mb = self.function.config.tmp_mb
            used = scratch_usage_mb(ctx._tmp)
            if used > tmp_mb:
                self.retire = f"scratch directory holds {used:.1f} MB, over tmp_mb={tmp_mb}"
        if self.lc._deferred:
            drop_deferred(self.lc, self.retire or "the invocation ended before it ran")
        if self.logging or self.lc._log is not None:
            self._report()
        failure = self.failure
        failed = None if failure is None else failure_counter(failure, self.status)
        pool.release(ctx, self.retire, "cold_starts" if self.cold else "warm_starts", failed)
        if self.retire == "out of memory":
            self._check_resident(self.ceiling)
        if failure is not None:
            raise failure
        return self.result

    def _report(self) -> None:
        """END and REPORT, to the logger and to the captured log."""
        lc, config = self.lc, self.function.config
        duration = (time.perf_counter() - self.started) * 1000
        init_ms = self.ctx.init_ms if self.cold else None
        peak = self.max_memory if self.max_memory is not None else peak_rss_mb()
        report = logs.report_line(lc.aws_request_id, duration, config.memory_size, peak, init_ms, self.status)
        logs.log_end_report(lc.aws_request_id, report, lc._log, self.logging)

    def _out_of_memory(self, detail: str) -> MemoryLimitExceeded:
        return MemoryLimitExceeded(
            f"Runtime exited with error: out of memory ({detail}; memory_mb={self.function.config.memory_mb})",
            self.lc.aws_request_id,
        )

    @staticmethod
    def _check_resident(memory_mb: int | None) -> None:
        import gc

        gc.collect()
        rss = current_rss_mb()
        if memory_mb is not None and rss is not None and rss > memory_mb:
            request_restart(f"resident memory {rss:.0f} MB stays above the {memory_mb} MB ceiling")


def invoke(function: Engine, event: Any, request_id: str, deadline: float | None = None) -> Any:
    """One invocation from sync code, by the driver that fits the handler and its backend."""
    function.check_health()
    if function.is_async and function.backend.run_sync is None:
        return run_on_owned_loop(function, event, request_id, deadline)
    return run_sync(function, event, request_id, deadline)


# -- sync driver ----------------------------------------------------------------------------


def _run_here(
    ctx: ExecutionContext,
    lc: LambdaContext,
    event: Any,
    target: Callable[[Any, LambdaContext], Any] | None = None,
    early: tuple[_Invocation, Any] | None = None,
) -> tuple[Any, BaseException | None]:
    """On the context's thread: the handler, then its deferred work.

    With `early`, the outcome is decided and announced (a lock released) before the flush.
    """
    ctx._serial += 1
    ctx.invocations += 1
    token = _current.set(lc)
    try:
        try:
            result, error = ctx.settle((target or ctx._target)(event, lc)), None
        except Exception as exc:
            result, error = None, exc
        except BaseException as exc:
            if early is not None:  # (the caller waits for this lock, then re-raises the exception)
                early[0].escaped = exc
                early[1].release()
            raise
        if early is not None:
            invocation, ready = early
            invocation.outcome(result, error)
            ready.release()
        flush_here(ctx, lc)
    finally:
        _current.reset(token)
    return result, error


def run_sync(function: Engine, event: Any, request_id: str, deadline: float | None = None) -> Any:
    driver = function.backend.run_sync
    if driver is not None:  # (another backend runs the handler: a child process)
        return driver(function, event, request_id, deadline)
    pool = function.pool(None)
    ctx, cold = pool.acquire(request_id)
    invocation = _Invocation(function, ctx, request_id, cold, deadline)
    try:
        result, error = ctx.worker.call(_run_here, ctx, invocation.lc, event, timeout=invocation.remaining())
    except TimeoutError as timeout:
        if ctx.worker.abandon(timeout.args[0], function.unwound):
            function.count_abandoned()
        invocation.lc._done = True
        result, error = None, _TimedOut()
    except BaseException as exc:  # KeyboardInterrupt, SystemExit... from the handler: passed on unchanged
        invocation.escape(pool, exc)
        raise
    return invocation.finish(pool, result, error)


class SyncRun:
    """An invocation started from sync code whose answer is wanted before its flush (WSGI surfaces).

    `ready()` waits for the handler's outcome; `complete()` waits for the flush and releases the
    context. Both respect the deadline, so a stuck handler never blocks the calling thread.
    """

    def __init__(
        self,
        function: Engine,
        event: Any,
        request_id: str,
        target: Callable[[Any, LambdaContext], Any] | None = None,
    ) -> None:
        self.pool = pool = function.pool(None)
        ctx, cold = pool.acquire(request_id)
        self.function = function
        self.ctx = ctx
        self.invocation = _Invocation(function, ctx, request_id, cold, None)
        self.invocation.marshal = target is None
        self.lc = self.invocation.lc
        self._ready = threading.Lock()
        self._ready.acquire()
        early = (self.invocation, self._ready)
        if target is None:
            self._call = ctx.worker.submit(_run_here, ctx, self.lc, event, target, early)
        else:
            # A wrapped app sees the caller's context variables, as it would on the caller's
            # thread (Flask's app context pushed around a test client's request).
            run = contextvars.copy_context().run
            self._call = ctx.worker.submit(run, _run_here, ctx, self.lc, event, target, early)
        self._completed = False

    def ready(self) -> tuple[Any, FunctionError | None] | None:
        """The handler's (result, failure), or None if the deadline passed first.

        A BaseException that is not an Exception (KeyboardInterrupt, SystemExit...) is raised
        here, unchanged, once the context is retired.
        """
        if not self._ready.acquire(timeout=max(0.0, self.invocation.remaining())):
            return None
        escaped = self.invocation.escaped
        if escaped is not None:
            self._completed = True
            self._call.done.acquire(timeout=max(0.0, self.invocation.remaining()))
            self.invocation.escape(self.pool, escaped)
            raise escaped
        return self.invocation.result, self.invocation.failure

    def settle(self) -> FunctionError | None:
        """`complete()` for a caller that has answered already: the failure, if any, is returned."""
        try:
            self.complete()
        except FunctionError as failure:
            return failure
        return None

    def complete(self) -> Any:
        """Wait for the flush (within the deadline), release the context, return or raise the outcome."""
        if self._completed:
            return None
        self._completed = True
        call = self._call
        if not call.done.acquire(timeout=max(0.0, self.invocation.remaining())):
            if self.ctx.worker.abandon(call, self.function.unwound):
                self.function.count_abandoned()
            self.lc._done = True
            return self.invocation.finish(self.pool, None, _TimedOut())
        if call.error is not None:
            return self.invocation.finish(self.pool, None, call.error)
        result, error = call.result  # _run_here returned: the outcome was decided before the flush
        return self.invocation.finish(self.pool, result, error, decided=True)


# -- async driver ---------------------------------------------------------------------------


def _call_here(ctx: ExecutionContext, lc: LambdaContext, event: Any) -> Any:
    ctx._serial += 1
    ctx.invocations += 1
    token = _current.set(lc)
    try:
        return ctx._target(event, lc)
    finally:
        _current.reset(token)


async def run_async(
    function: Engine,
    event: Any,
    request_id: str,
    deadline: float | None = None,
    *,
    on_ready: Ready | None = None,
    log: list[str] | None = None,
    on_start: Callable[[float], None] | None = None,
) -> Any:
    """One invocation on the running loop. `on_ready(result, failure)` is awaited as soon as the
    handler's outcome is known, before the flush: HTTP surfaces answer the client there."""
    import asyncio

    driver = function.backend.run_async
    if driver is not None:  # (another backend runs the handler: a child process)
        return await driver(function, event, request_id, deadline, on_ready=on_ready, log=log, on_start=on_start)
    pool = function.loop_pool()
    ctx, cold = pool.take(), False
    if ctx is None:
        ctx, cold = await pool.aacquire(request_id)
    invocation = _Invocation(function, ctx, request_id, cold, deadline, log)
    lc = invocation.lc
    if on_start is not None:
        on_start(lc._deadline)
    result: Any = None
    error: BaseException | None = None
    decided = False
    task = pool.current_task(pool.loop)  # type: ignore[arg-type]  # (a loop's pool)
    assert task is not None
    # A dict entry on the loop's DeadlineWatch rather than an asyncio.timeout per invocation (a
    # fifth of the cost); at the deadline it cancels this task, as asyncio.timeout would.
    expiry = _Expiry(task)
    watch = pool.watch
    watch.add(expiry, lc._deadline)
    token = _current.set(lc)
    try:
        try:
            try:
                if function.is_async:
                    ctx._serial += 1
                    ctx.invocations += 1
                    result = await ctx._target(event, lc)
                else:
                    result = await ctx.acall(_call_here, ctx, lc, event)
            except Exception as exc:
                error = exc
            if on_ready is not None:
                failure = invocation.outcome(result, error)
                decided = True
                try:
                    await on_ready(invocation.result, failure)
                except Exception:
                    logs.logger.exception("sending the response failed")
            if lc._deferred or lc._tasks:
                await flush(ctx, lc)
            else:
                lc._done = True
        finally:
            watch.discard(expiry)
            if expiry.fired:
                task.uncancel()
        if expiry.fired or time.monotonic() > lc._deadline:
            # (Blocking code may never have given the timer a chance: Lambda would have stopped it.)
            raise _TimedOut
    except (_TimedOut, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError) and not expiry.fired:
            # The caller was cancelled: Lambda would have run on, but this caller is gone.
            cancel_stray_tasks(lc)
            abandoned = ctx.has_worker and ctx.worker.abandoned
            pool.release(ctx, "its sync code was abandoned" if abandoned else None)
            raise
        cancel_stray_tasks(lc)
        result, error, decided = None, _TimedOut(), False
    finally:
        _current.reset(token)
    return invocation.finish(pool, result, error, decided=decided)


class _Expiry:
    """A deadline on the loop's DeadlineWatch: when it passes, the invocation's task is cancelled."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def expire(self) -> None:
        self.fired = True
        self.task.cancel()


async def _answer(on_ready: Ready, result: Any, failure: FunctionError | None) -> None:
    try:
        await on_ready(result, failure)
    except Exception:
        logs.logger.exception("sending the response failed")


# -- lambdify's own event loop, for invoke() of async handlers ------------------------------

_owned: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None
_owned_lock = threading.Lock()


def owned_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    global _owned
    with _owned_lock:
        if _owned is None:
            import asyncio

            from .background import install_task_factory

            loop = asyncio.new_event_loop()
            install_task_factory(loop)
            thread = threading.Thread(target=loop.run_forever, name="lambdify-loop", daemon=True)
            thread.start()
            _owned = (loop, thread)
        return _owned


def run_on_owned_loop(function: Engine, event: Any, request_id: str, deadline: float | None = None) -> Any:
    import asyncio

    loop, thread = owned_loop()
    if threading.current_thread() is thread:
        raise RuntimeError(
            f"invoke() of async function {function.config.name!r} from lambdify's own event loop would deadlock; "
            "use `await fn.ainvoke(event)`"
        )
    started = threading.Event()
    deadlines: list[float] = []

    def on_start(deadline: float) -> None:
        deadlines.append(deadline)
        started.set()

    coroutine = run_async(function, event, request_id, deadline, on_start=on_start)
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    config = function.config
    if not started.wait(config.queue_timeout + config.init_timeout + 1.0) and not future.done():
        future.cancel()
        raise TooManyRequests(f"{config.name}: lambdify's event loop is blocked by another invocation")
    try:
        return future.result(timeout=max(0.0, deadlines[0] - time.monotonic()) + 0.05 if deadlines else None)
    except TimeoutError:
        if future.done():
            raise
        # Sync code in an async handler is blocking the loop: answer now; the invocation is
        # counted as timed out and its context retired as soon as the loop runs again.
        raise InvocationTimeout(config.timeout, request_id) from None


def _reset_after_fork() -> None:
    global _owned, _owned_lock
    _owned = None
    _owned_lock = threading.Lock()


hooks.at_fork(_reset_after_fork)
