"""Background work finishes before the invocation does.

Two kinds: what the handler registered with `context.defer(...)`, run one item after another
in registration order once the handler has returned or raised; and asyncio tasks the handler
created and left running. Tasks are attributed to the invocation that created them by a task
factory that reads the current invocation from a ContextVar (tasks inherit the creator's
context), so nothing depends on diffing `asyncio.all_tasks()`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any

from .current import _current
from .logs import logger
from .resources import _is_awaitable

if TYPE_CHECKING:
    import asyncio

    from .context import ExecutionContext
    from .lambda_context import LambdaContext


def install_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    """Make `loop` record each task created during an invocation on that invocation (idempotent).

    A task the server starts in its own code as the response ends (hypercorn's keep-alive timer)
    is not the invocation's; it runs in a context without it, so that what it starts later (the
    timer's wait, after a streamed response) is not taken for the invocation's either.
    """
    import asyncio
    import contextvars

    previous = loop.get_task_factory()
    if getattr(previous, "_lambdify", False):
        return
    new_task = asyncio.Task
    current = _current.get

    def servers(lc: LambdaContext) -> bool:
        """Whether the server's own code runs now: the coroutine of its `send` that ends the response."""
        return bool(getattr(lc._sending, "cr_running", 0))

    def detached(context: contextvars.Context | None) -> contextvars.Context:
        context = contextvars.copy_context() if context is None else context.copy()
        context.run(_current.set, None)  # type: ignore[arg-type]  # (read as outside any invocation)
        return context

    def attribute(lc: LambdaContext, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        if lc._tasks is None:
            lc._tasks = set()
        lc._tasks.add(task)
        return task

    if previous is None and sys.version_info < (3, 12):
        # (3.11's loops call the factory with `context` only; no **kwargs to build and spread
        # for each of the server's own tasks, one per request, which all come through here.)
        def factory(loop: asyncio.AbstractEventLoop, coro: Any, context: Any = None) -> asyncio.Task[Any]:
            lc = current(None)
            if lc is None or lc._done:
                return new_task(coro, loop=loop, context=context)
            if servers(lc):
                return new_task(coro, loop=loop, context=detached(context))
            return attribute(lc, new_task(coro, loop=loop, context=context))

    else:

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:  # type: ignore[misc]
            # (**kwargs: newer Pythons pass create_task's keyword arguments, `name` among them, through)
            lc = current(None)
            server = lc is not None and not lc._done and servers(lc)
            if server:
                kwargs["context"] = detached(kwargs.get("context"))
            task: asyncio.Task[Any] = (
                new_task(coro, loop=loop, **kwargs) if previous is None else previous(loop, coro, **kwargs)  # type: ignore[assignment]
            )
            if lc is None or lc._done or server:
                return task
            return attribute(lc, task)

    factory._lambdify = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)


def current_task_getter() -> Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]:
    """`asyncio.current_task`, minus the Python wrapper it has before 3.12 (a dict lookup in it)."""
    import asyncio.tasks

    tasks = getattr(asyncio.tasks, "_current_tasks", None)
    if sys.version_info < (3, 12) and isinstance(tasks, dict):
        return tasks.get
    return asyncio.current_task


def _failed(ctx: ExecutionContext, lc: LambdaContext, what: str, exc: BaseException) -> None:
    ctx._function.count("deferred_errors")
    logger.error(
        "RequestId: %s deferred %s failed: %s: %s",
        lc.aws_request_id,
        what,
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )


def _describe(item: Any) -> str:
    return getattr(item, "__qualname__", None) or repr(item)


def flush_here(ctx: ExecutionContext, lc: LambdaContext) -> None:
    """Run the deferred work of a loop-less context, on its own thread."""
    while True:
        deferred = lc._deferred  # (a stray task may have made it meanwhile)
        while deferred:
            item, args, kwargs = deferred.pop(0)
            try:
                ctx.settle(item if _is_awaitable(item) else item(*args, **kwargs))
            except Exception as exc:
                _failed(ctx, lc, _describe(item), exc)
        if not lc._tasks:
            break
        ctx.run_coroutine_here(await_stray_tasks(ctx, lc))
        if not lc._deferred:
            break
    lc._done = True


async def _run_deferred(
    ctx: ExecutionContext, lc: LambdaContext, call_sync: Callable[[Callable[[], Any]], Awaitable[Any]]
) -> None:
    """The deferred work, in order: awaitables awaited here, sync callables through `call_sync`."""
    deferred = lc._deferred  # (a stray task may have made it meanwhile)
    while deferred:
        item, args, kwargs = deferred.pop(0)
        try:
            if _is_awaitable(item):
                await item
            else:
                result = await call_sync(functools.partial(item, *args, **kwargs))
                if _is_awaitable(result):
                    await result
        except Exception as exc:
            _failed(ctx, lc, _describe(item), exc)


async def flush(
    ctx: ExecutionContext, lc: LambdaContext, call_sync: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None
) -> None:
    """Run deferred work (sync items through `call_sync`, on the context's thread by default; async
    ones here), then stray tasks."""
    while True:
        await _run_deferred(ctx, lc, ctx.acall if call_sync is None else call_sync)
        if not lc._tasks:
            break
        await await_stray_tasks(ctx, lc)
        if not lc._deferred:
            break
    lc._done = True


async def flush_portable(ctx: ExecutionContext, lc: LambdaContext) -> None:
    """`flush` on an event loop that is not asyncio's (trio, through anyio): sync items on the
    context's thread, awaitables here. Tasks are not attributed to invocations there."""
    import anyio.to_thread

    async def on_its_thread(call: Callable[[], Any]) -> Any:
        timeout = max(0.0, lc._deadline - _monotonic())
        run = functools.partial(ctx.worker.call, call, timeout=timeout)
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)

    await _run_deferred(ctx, lc, on_its_thread)
    lc._done = True


async def await_stray_tasks(ctx: ExecutionContext, lc: LambdaContext) -> None:
    """Deal with the tasks the invocation left running, per the function's `stray_tasks` policy."""
    import asyncio

    policy = ctx._function.config.stray_tasks
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    seen: set[asyncio.Task[Any]] = set()
    while lc._tasks:
        tasks, lc._tasks = lc._tasks, None
        if me is not None:
            tasks.discard(me)
        pending = {task for task in tasks if not task.done()}
        if pending and policy == "warn":
            names = ", ".join(sorted(task.get_name() for task in pending))
            logger.warning("RequestId: %s left %d task(s) running: %s", lc.aws_request_id, len(pending), names)
            tasks -= pending
        elif pending and policy == "cancel":
            for task in pending:
                task.cancel()
        if pending and policy != "warn":
            # Tasks a sync handler left on its thread's own loop (async code it ran there) finish
            # on that loop, on that thread; the others here.
            theirs = {task for task in pending if task.get_loop() is not loop}
            try:
                if theirs:
                    await ctx.acall(_wait_on_own_loop, ctx, theirs)
                if pending - theirs:
                    await asyncio.wait(pending - theirs)
            except asyncio.CancelledError:  # the deadline passed (or the caller went): they go too
                for task in pending:
                    task.cancel()
                raise
        for task in tasks - seen:
            seen.add(task)
            if not task.cancelled() and task.exception() is not None:
                _failed(ctx, lc, f"task {task.get_name()}", task.exception())  # type: ignore[arg-type]


def _wait_on_own_loop(ctx: ExecutionContext, tasks: set[asyncio.Task[Any]]) -> None:
    """On a context's thread: run its private loop until `tasks` (on that loop) are done."""
    import asyncio

    ctx.run_coroutine_here(asyncio.wait(tasks))


def drop_deferred(lc: LambdaContext, reason: str) -> None:
    """Log, one line each, the deferred work an invocation ends without running (after a timeout)."""
    import types

    deferred, lc._deferred = lc._deferred, None
    for item, _args, _kwargs in deferred or ():
        logger.error("RequestId: %s deferred %s dropped: %s", lc.aws_request_id, _describe(item), reason)
        if isinstance(item, types.CoroutineType):
            item.close()  # (never awaited, by design: no RuntimeWarning about it)


def cancel_stray_tasks(lc: LambdaContext) -> None:
    """After a timeout the context is reset, so whatever the invocation left running is cancelled."""
    tasks, lc._tasks = lc._tasks, None
    lc._done = True
    for task in tasks or ():
        task.cancel()
