"""`ASGIMiddleware`: wrap an existing ASGI app (Starlette, FastAPI, ...) so that each HTTP request
is an invocation on a per-worker execution context.

```python
app = FastAPI()
app.add_middleware(ASGIMiddleware, timeout=10, init=setup)
```

Pure ASGI. A request adds one LambdaContext, a deadline entry and the ContextVar; on the shared
context's lane (`asgi_requests._Lane`, after the first request on a loop) nothing more while it
goes well: no pool hand-out, one stats record and a short release at its end.

At the deadline the middleware answers 504 itself if the app has not started its response (a
sync endpoint stuck in a thread pool cannot be cancelled, so waiting for it is not an option);
if the response had started, the app is cancelled and the connection is closed, so that no
half-sent body passes for a complete one.
"""

from __future__ import annotations

import asyncio
import functools
from _thread import get_ident
from time import monotonic
from typing import TYPE_CHECKING, Any, Final

from ..core.background import cancel_stray_tasks, flush, flush_portable
from ..core.config import build_config
from ..core.current import _current, new_request_id
from ..core.engine import Engine
from ..core.errors import FunctionError, InvocationTimeout, MemoryLimitExceeded, TooManyRequests
from ..core.invocation import _Invocation, _TimedOut
from ..core.invoke_portable import abandon_running, acquire
from ..core.logs import INFO, _LazyLogger
from ..isolation.thread import THREAD
from .asgi_requests import (
    ResponseCutOff,
    _Call,
    _Lane,
    _Request,
    answer_out_of_memory,
    id_header,
    over_ceiling,
    refuse,
)
from .function_asgi import send_json

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..core.context import ExecutionContext
    from ..core.pool import Pool
    from .types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIMiddleware"]

MIDDLEWARE_DEFAULTS: Final = {"timeout": 30.0, "memory_mb": None}
SCOPE_KEY: Final = "lambdify.context"


def middleware_function(app: Any, defaults: dict[str, Any], options: dict[str, Any]) -> Engine:
    """The Function behind a middleware: the app is its handler, the options are @handler's."""
    name = options.pop("name", None) or "app"  # the wrapped app is often framework plumbing
    config = build_config(name, {**defaults, **options, "name": name})
    if config.isolation != "thread":
        raise ValueError(
            "isolation='process' is for @handler functions: a middleware runs its app in the server's process"
        )
    return Engine(app, config, THREAD)


class ASGIMiddleware:
    """Each HTTP request to the wrapped app is an invocation: a warm context, a deadline, a memory
    ceiling, and background work flushed after the response.

    The LambdaContext is at `scope["lambdify.context"]` and `current_context()`. Options are
    `@handler`'s; defaults here: `timeout=30`, `memory_mb=None`, `concurrency=None` (one context
    per worker, shared by concurrent requests: its resources must be safe to share).
    """

    def __new__(cls, app: ASGIApp, **options: Any) -> ASGIMiddleware:
        # With `status_path`, a subclass serves the status endpoints: without it, no request pays a check.
        if options.get("status_path") is not None and cls is ASGIMiddleware:
            return super().__new__(_WithStatus)
        return super().__new__(cls)

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        options.pop("status_path", None)
        self.app = app
        self.function = middleware_function(app, {**MIDDLEWARE_DEFAULTS, "concurrency": None}, options)
        self._lane: _Lane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # (HTTP requests are served inline: one coroutine less each)
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
            else:  # websockets and anything else: untouched, no deadline
                await self.app(scope, receive, send)
            return
        lane = self._lane
        request: _Request | None = None  # (None on the lane: made only if the request ends the general way)
        # (On the lane while its loop runs here, its context serves, and START lines are off.)
        if (
            lane is not None
            and lane.thread == get_ident()
            and lane.running()
            and not lane.ctx.retired
            and not lane.pool.closed
            and lane.ctx._tmp is None
            and ((real := _LazyLogger._real) is None or not real.isEnabledFor(INFO))
        ):
            pool, ctx = lane.pool, lane.ctx
            started = monotonic()
            lc = _Call(ctx, None, started + lane.timeout, False)
            ctx.active += 1
        else:
            try:
                loop_pool: Pool | None = self.function.loop_pool()
            except RuntimeError:  # no asyncio loop runs here: trio (or another anyio backend)
                loop_pool = None
            if loop_pool is None:  # (outside the `except`: the app's exceptions must not chain to that one)
                await self._portable(scope, receive, send)
                return
            pool = loop_pool
            taken = await self._take(pool, send, pool.aacquire)
            if taken is None:  # refused: 429, or 502 after a failed INIT
                return
            request = _Request(self.function, *taken, None)
            ctx, lc, started = request.ctx, request.lc, request.started
        task = pool.current_task(pool.loop)  # type: ignore[arg-type]  # (a loop's pool)
        assert task is not None
        lc._follow(send, task, request if request is not None and request.ceiling is not None else None)
        ctx._serial += 1  # a new invocation: resources are checked again at their first use
        ctx.invocations += 1
        scope[SCOPE_KEY] = lc
        watch = pool.watch
        watch.add(lc, lc._deadline)
        token = _current.set(lc)
        error: BaseException | None = None
        try:
            try:
                await self.app(scope, receive, lc.send_wrapper)
            except Exception as exc:
                error = exc
            if lc._deferred or lc._tasks:
                await flush(ctx, lc)
            else:
                lc._done = True
        except asyncio.CancelledError:
            if not lc._timed_out:
                cancel_stray_tasks(lc)
                pool.release(ctx)
                raise
            task.uncancel()
        except BaseException as exc:  # KeyboardInterrupt, SystemExit...: passed on as without lambdify
            cancel_stray_tasks(lc)
            (request or _Request.around(self.function, lc, started)).escape(pool, exc)
            raise
        finally:
            watch.discard(lc)
            _current.reset(token)
        if request is None:
            if error is None and not lc._timed_out and ctx._tmp is None:
                # (Kept in the recent invocations of the stats: it must not keep the server's objects alive.)
                lc._task = lc._send = None  # type: ignore[assignment]
                self.function.recorder.record(lc, started, monotonic(), None, False)
                pool.release(ctx, None, "warm_starts")
                return
            request = _Request.around(self.function, lc, started)
        elif _Lane.fits(self.function, pool) and (lane is None or lane.pool is not pool or lane.ctx.retired):
            self._lane = _Lane(self.function, pool, ctx)  # the requests after this one take the lane
        await self._end(request, pool, error)

    @staticmethod
    async def _take(
        pool: Pool, send: Send, acquire: Callable[[str], Awaitable[tuple[ExecutionContext, bool]]]
    ) -> tuple[ExecutionContext, str | None, bool] | None:
        """A request off the lane: (a context from the pool, the request id if one was made, whether
        it was a cold start). The pool may create one, queue the request or throttle it: then the
        request is answered here and None returned."""
        ctx = pool.take()
        if ctx is not None:
            return ctx, None, False
        request_id = new_request_id()
        try:
            ctx, cold = await acquire(request_id)
        except (TooManyRequests, FunctionError) as exc:
            await refuse(send, exc, request_id)
            return None
        return ctx, request_id, cold

    @staticmethod
    async def _end(request: _Request, pool: Pool, error: BaseException | None) -> None:
        """End a request the general way: its timeout, its error, the limits, its stats and logs."""
        lc = request.lc
        if lc._timed_out:
            cancel_stray_tasks(lc)
            error = _TimedOut()
            if lc._answer is not None:
                await lc._answer
        app_error: BaseException | None = None
        try:
            request.finish(pool, None, error)
        except InvocationTimeout:
            # (A response sent whole - the deadline passed in the background work after it - is
            # not cut: the server would close a connection that may carry the next request.)
            if not lc._answered and not lc.sent_whole():
                raise ResponseCutOff(
                    f"RequestId: {lc.aws_request_id} timed out after its response had started"
                ) from None
        except MemoryLimitExceeded:
            if not lc._responding:
                await answer_out_of_memory(lc._send, lc.aws_request_id)
        except FunctionError:
            app_error = error
        finally:
            lc._task = lc._send = lc._invocation = None  # type: ignore[assignment]  # (see __call__)
        if app_error is not None:
            raise app_error  # the app's own exception, unchanged (raised outside `except`: no chaining)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the app's lifespan through; add provisioned contexts at startup and retire all at shutdown."""
        function = self.function

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await function.astart()  # (on trio too: the portable pool's contexts)
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await function.ashutdown()
            await send(message)

        await self.app(scope, receive_wrapper, send_wrapper)

    async def _portable(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request on an event loop that is not asyncio's (trio), through anyio.

        The same contract with the backend's own means: the deadline is a cancel scope, sync
        deferred work runs on the context's thread, INIT in a worker thread. Tasks the app leaves
        running are not attributed to the invocation (asyncio's task factory has no equivalent).
        """
        import anyio

        function = self.function
        pool = function.portable_pool()
        taken = await self._take(pool, send, functools.partial(acquire, function, pool))
        if taken is None:
            return
        invocation = _Invocation(function, *taken, None)
        ctx, lc = invocation.ctx, invocation.lc
        scope[SCOPE_KEY] = lc
        ctx._serial += 1
        ctx.invocations += 1
        responding = answered = whole = False

        async def send_wrapper(message: Message) -> None:
            nonlocal responding, answered, whole
            if answered:
                return
            if not responding and message["type"] == "http.response.start":
                responding = True
                if invocation.ceiling is not None and over_ceiling(invocation, invocation.ceiling):
                    answered = True
                    await answer_out_of_memory(send, lc.aws_request_id)
                    return
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                whole = True

        token = _current.set(lc)
        error: BaseException | None = None
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + invocation.remaining()) as deadline:
                try:
                    await self.app(scope, receive, send_wrapper)
                except Exception as exc:
                    error = exc
                await flush_portable(ctx, lc)
        except anyio.get_cancelled_exc_class():  # cancelled from outside (the server): Lambda would have run on
            abandoned = abandon_running(function, ctx)
            pool.release(ctx, "its sync code was abandoned" if abandoned else None)
            raise
        except BaseException as exc:  # KeyboardInterrupt, SystemExit...: passed on as without lambdify
            invocation.escape(pool, exc)
            raise
        finally:
            _current.reset(token)
        if deadline.cancelled_caught:
            abandon_running(function, ctx)  # (deferred sync work still running on the context's thread)
            error = _TimedOut()
            if not responding:
                answered = True
                await send_json(send, 504, {"message": "Endpoint request timed out"}, [id_header(lc.aws_request_id)])
        app_error: BaseException | None = None
        try:
            invocation.finish(pool, None, error)
        except InvocationTimeout:
            if not answered and not whole:  # (see _end)
                raise ResponseCutOff(
                    f"RequestId: {lc.aws_request_id} timed out after its response had started"
                ) from None
        except MemoryLimitExceeded:
            if not responding:
                await answer_out_of_memory(send, lc.aws_request_id)
        except FunctionError:
            app_error = error
        if app_error is not None:
            raise app_error  # the app's own exception, unchanged (raised outside `except`: no chaining)


class _WithStatus(ASGIMiddleware):
    """`ASGIMiddleware(app, status_path="/_lambdify")`: also serves the status page, `stats.json`
    and `metrics` below `status_path` (not invocations of the app)."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        from .status import Status, status_prefix

        self.status_path = status_prefix(options.get("status_path"))
        super().__init__(app, **options)
        self.status = Status()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            from .status import below

            path, root = scope["path"], scope.get("root_path", "")
            if root and path.startswith(root):  # (mounted, or served with --root-path: the app's own path)
                path = path[len(root) :]
            rest = below(self.status_path, path)
            if rest is not None:
                await self.status.serve(scope, receive, send, rest)
                return
        await super().__call__(scope, receive, send)
