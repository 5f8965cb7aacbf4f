"""Running an invocation on an event loop that is not asyncio's (trio, through anyio).

The same contract as `invoke_async`, with the backend's own means: the deadline is a cancel
scope, sync code runs on the context's thread (waited for from one of anyio's worker threads),
INIT runs in a worker thread when it may block. Tasks the handler leaves running are not
attributed to the invocation: asyncio's task factory has no equivalent there.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import logs
from .background import flush_portable
from .current import _current
from .invocation import Ready, _Invocation, _TimedOut, call_handler
from .resources import _is_awaitable

if TYPE_CHECKING:
    from .context import ExecutionContext
    from .engine import Engine
    from .pool import Pool


def on_asyncio() -> bool:
    """Whether asyncio runs the calling coroutine (rather than trio, say, through anyio)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a worker thread of the running backend (anyio's)."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(fn, *args)


async def acquire(function: Engine, pool: Pool, request_id: str | None) -> tuple[ExecutionContext, bool]:
    """A context from a loop-less pool, in a worker thread when getting it may block (INIT, a full pool)."""
    # With no INIT code and room for a context, acquiring cannot block: do it here, as the
    # asyncio path does, rather than in a thread, so that requests keep their order.
    if function.config.init is None and not function.is_class and pool._has_room():
        return pool.acquire(request_id)
    acquired: tuple[ExecutionContext, bool] = await in_thread(pool.acquire, request_id)
    return acquired


def abandon_running(function: Engine, ctx: ExecutionContext) -> bool:
    """After the deadline (or a cancelled caller): give up on the context's running sync call, if any."""
    if ctx.has_worker and ctx.worker.abandon(None, function.unwound):
        function.count_abandoned()
        return True
    return False


async def run_portable(
    function: Engine,
    event: Any,
    request_id: str,
    deadline: float | None = None,
    *,
    on_ready: Ready | None = None,
    log: list[str] | None = None,
    on_start: Callable[[float], None] | None = None,
) -> Any:
    """`run_async` when no asyncio loop runs: one invocation on the running anyio backend."""
    import anyio
    import anyio.to_thread

    pool = function.portable_pool()
    ctx, cold = pool.take(), False
    if ctx is None:
        ctx, cold = await acquire(function, pool, request_id)
    invocation = _Invocation(function, ctx, request_id, cold, deadline, log)
    lc = invocation.lc
    if on_start is not None:
        on_start(lc._deadline)
    result: Any = None
    error: BaseException | None = None
    decided = False
    token = _current.set(lc)
    try:
        with anyio.CancelScope(deadline=anyio.current_time() + invocation.remaining()) as scope:
            try:
                if function.is_async:
                    ctx._serial += 1
                    ctx.invocations += 1
                    result = await ctx._target(event, lc)
                else:
                    # (The cancel scope ends the wait at the deadline; the thread's own timeout, a
                    # whole invocation's, only bounds a wait given up on.)
                    call = functools.partial(ctx.worker.call, call_handler, ctx, lc, event, timeout=invocation.timeout)
                    result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
                    if _is_awaitable(result):
                        result = await result
            except Exception as exc:
                error = exc
            if on_ready is not None:
                failure = invocation.outcome(result, error)
                decided = True
                try:
                    await on_ready(invocation.result, failure)
                except Exception:
                    logs.logger.exception("sending the response failed")
            await flush_portable(ctx, lc)
    except anyio.get_cancelled_exc_class():
        # The caller was cancelled (the server): Lambda would have run on, but this caller is gone.
        abandoned = abandon_running(function, ctx)
        lc._done = True
        pool.release(ctx, "its sync code was abandoned" if abandoned else None)
        raise
    except BaseException as exc:  # KeyboardInterrupt, SystemExit...: passed on unchanged
        invocation.escape(pool, exc)
        raise
    finally:
        _current.reset(token)
    if scope.cancelled_caught or time.monotonic() > lc._deadline:
        # (Blocking code may never have let the cancel scope act: Lambda would have stopped it.)
        abandon_running(function, ctx)
        lc._done = True
        result, error, decided = None, _TimedOut(), False
    return invocation.finish(pool, result, error, decided=decided)
