"""Running an invocation on an event loop: the handler runs in the caller's task under the
loop's deadline watch, sync code on the context's thread (`ainvoke()`, `fn.asgi`, and `invoke()`
of an async handler, on lambdify's own loop). Off asyncio (trio), `invoke_portable` runs it."""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import hooks, logs
from .background import cancel_stray_tasks, flush
from .current import _current
from .errors import FunctionError, InvocationTimeout, TooManyRequests
from .invocation import Ready, _Invocation, _TimedOut, call_handler
from .invoke_portable import run_portable

if TYPE_CHECKING:
    from collections import deque

    from .engine import Engine


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
    driver = function.backend.run_async
    if driver is not None:  # (another backend runs the handler: a child process)
        return await driver(function, event, request_id, deadline, on_ready=on_ready, log=log, on_start=on_start)
    try:
        pool = function.loop_pool()
    except RuntimeError:  # no asyncio loop runs here: trio (or another anyio backend)
        pool = None
    if pool is None:  # (outside the `except`: what the handler raises must not chain to that)
        return await run_portable(function, event, request_id, deadline, on_ready=on_ready, log=log, on_start=on_start)
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
                    result = await ctx.acall(call_handler, ctx, lc, event)
            except Exception as exc:
                error = exc
            if on_ready is not None:
                failure = invocation.outcome(result, error)
                decided = True
                try:
                    # (What the server starts while it sends the response is the connection's.)
                    lc._sending = sent = on_ready(invocation.result, failure)
                    await sent
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
            invocation.cancelled(pool, "its sync code was abandoned" if abandoned else None)
            raise
        cancel_stray_tasks(lc)
        result, error, decided = None, _TimedOut(), False
    except BaseException as exc:  # KeyboardInterrupt, SystemExit...: passed on unchanged, the context retired
        cancel_stray_tasks(lc)
        invocation.escape(pool, exc)
        raise
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
            from .background import install_task_factory

            loop = asyncio.new_event_loop()
            install_task_factory(loop)
            thread = threading.Thread(target=loop.run_forever, name="lambdify-loop", daemon=True)
            thread.start()
            _owned = (loop, thread)
        return _owned


class _Handoff:
    """One `invoke()` of an async handler, handed from a sync caller to lambdify's loop.

    The caller waits on one raw lock, released when the invocation's task is done: one wake-up
    each way (`run_coroutine_threadsafe` adds a concurrent Future, its condition variable and a
    chained callback, and the caller used to wait twice: for the start, then for the end).
    """

    __slots__ = ("args", "deadline", "done", "error", "loop", "result", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, args: tuple[Any, ...]) -> None:
        self.loop = loop
        self.args = args
        self.deadline: float | None = None  # the invocation's, once it started (it may queue first)
        self.result: Any = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[Any] | None = None
        self.done = _thread.allocate_lock()
        self.done.acquire()

    def start(self) -> None:  # (on the loop)
        loop = self.loop
        ready: deque[asyncio.Handle] | None = getattr(loop, "_ready", None)  # (asyncio's own loops, not uvloop's)
        queued = -1 if ready is None else len(ready)
        self.task = loop.create_task(self.run())
        if ready is not None and len(ready) == queued + 1:
            # The task's first step, queued just now, runs here, as the loop's next turn would have
            # run it: a warm invocation that never waits is done within this one turn of the loop.
            ready.pop()._run()

    async def run(self) -> None:
        # The caller is woken from within the task as it ends (a done callback would wait for
        # one more turn of the loop).
        try:
            self.result = await run_async(*self.args, on_start=self.started)
        except asyncio.CancelledError:  # (cancelled by `cancel()`: the loop was blocked)
            self.error = TooManyRequests("the invocation was cancelled before it ran")
        except BaseException as exc:  # (the caller re-raises it: a SystemExit too, which must not stop this loop)
            self.error = exc
        finally:
            self.done.release()

    def started(self, deadline: float) -> None:
        self.deadline = deadline

    def cancel(self) -> None:  # (on the loop)
        if self.task is not None:
            self.task.cancel()


def run_on_owned_loop(function: Engine, event: Any, request_id: str, deadline: float | None = None) -> Any:
    loop, thread = owned_loop()
    if _thread.get_ident() == thread.ident:
        raise RuntimeError(
            f"invoke() of async function {function.config.name!r} from lambdify's own event loop would deadlock; "
            "use `await fn.ainvoke(event)`"
        )
    config = function.config
    handoff = _Handoff(loop, (function, event, request_id, deadline))
    # (An empty context: the task is not background work of an invocation that called invoke().)
    loop.call_soon_threadsafe(handoff.start, context=contextvars.Context())
    now = time.monotonic()
    queued_until = now + config.queue_timeout + config.init_timeout + 1.0
    # (One wait in the usual case: a warm context starts at once and ends before this.)
    ends = min(queued_until, now + config.timeout if deadline is None else deadline)
    while not handoff.done.acquire(timeout=max(0.0, ends - time.monotonic()) + 0.05):
        if handoff.deadline is None:  # still waiting for a context, or its INIT, or the loop
            if time.monotonic() < queued_until:
                ends = queued_until
                continue
            loop.call_soon_threadsafe(handoff.cancel)
            raise TooManyRequests(f"{config.name}: lambdify's event loop is blocked by another invocation")
        if time.monotonic() < handoff.deadline:
            ends = handoff.deadline
            continue
        # Sync code in an async handler is blocking the loop: answer now; the invocation is
        # counted as timed out and its context retired as soon as the loop runs again.
        raise InvocationTimeout(config.timeout, request_id)
    if handoff.error is not None:
        raise handoff.error
    return handoff.result


def _reset_after_fork() -> None:
    global _owned, _owned_lock
    _owned = None
    _owned_lock = threading.Lock()


hooks.at_fork(_reset_after_fork)
