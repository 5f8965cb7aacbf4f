"""`ASGIMiddleware`: wrap an existing ASGI app (Starlette, FastAPI, ...) so that each HTTP request
is an invocation on a per-worker execution context.

```python
app = FastAPI()
app.add_middleware(ASGIMiddleware, timeout=10, init=setup)
```

Pure ASGI. The fast path adds one pool hand-out, one timer and one ContextVar to a request.
At the deadline the middleware answers 504 itself if the app has not started its response
(a sync endpoint stuck in a thread pool cannot be cancelled, so waiting for it is not an
option); if the response had started, the app is cancelled and the connection is closed, so
that no half-sent body passes for a complete one.
"""

from __future__ import annotations

import asyncio
import contextvars
from _thread import get_ident
from collections.abc import Awaitable
from time import monotonic
from typing import TYPE_CHECKING, Any, Final

from ..core.background import cancel_stray_tasks, flush, flush_portable
from ..core.config import build_config
from ..core.context import LambdaContext
from ..core.current import _current, new_request_id
from ..core.engine import Engine
from ..core.errors import FunctionError, InvocationTimeout, LambdifyError, MemoryLimitExceeded, TooManyRequests
from ..core.invocation import _Invocation, _TimedOut
from ..core.invoke_portable import abandon_running, acquire
from ..core.logs import INFO, _LazyLogger, logger
from ..core.memory import peak_rss_mb
from ..isolation.thread import THREAD
from .function_asgi import send_json

if TYPE_CHECKING:
    from ..core.context import ExecutionContext
    from ..core.pool import Pool
    from .types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIMiddleware"]

MIDDLEWARE_DEFAULTS: Final = {"timeout": 30.0, "memory_mb": None}
SCOPE_KEY: Final = "lambdify.context"


class ResponseCutOff(Exception):
    """The deadline passed after the response had started: the server must close the connection."""


def middleware_function(app: Any, defaults: dict[str, Any], options: dict[str, Any]) -> Engine:
    """The Function behind a middleware: the app is its handler, the options are @handler's."""
    name = options.pop("name", None) or "app"  # the wrapped app is often framework plumbing
    config = build_config(name, {**defaults, **options, "name": name})
    if config.isolation != "thread":
        raise ValueError(
            "isolation='process' is for @handler functions: a middleware runs its app in the server's process"
        )
    return Engine(app, config, THREAD)


class _Call(LambdaContext):
    """The LambdaContext of one request through the middleware, which also follows its response:
    how far it got (for the answer at the deadline), and the message that ends it."""

    __slots__ = ("_answer", "_answered", "_invocation", "_responding", "_send", "_task", "_timed_out")

    _answer: asyncio.Task[None] | None
    _answered: bool  # the middleware answered for the app: drop what the app sends
    _invocation: _Invocation | None  # with a memory ceiling: checked as the response starts
    _responding: bool  # the app sent http.response.start
    _send: Send
    _task: asyncio.Task[Any]
    _timed_out: bool

    def _follow(self, send: Send, task: asyncio.Task[Any], invocation: _Invocation | None) -> None:
        self._send, self._task, self._invocation, self._answer = send, task, invocation, None
        self._responding = self._timed_out = self._answered = False

    def send_wrapper(self, message: Message) -> Awaitable[None]:
        """The app's `send`: notes how far the response got, checks the memory ceiling at its start.

        A plain function that returns the awaitable to await (the server's own, usually), rather
        than a coroutine of ours wrapped around it: one coroutine less per message.
        """
        if self._answered:
            return _nothing()
        if not self._responding:
            if message["type"] == "http.response.start":
                invocation = self._invocation
                if invocation is not None and invocation.ceiling is not None and _over(invocation, invocation.ceiling):
                    self._answered = self._responding = True
                    self._sending = answer = _answer_out_of_memory(self._send, self.aws_request_id)
                    return answer
                self._responding = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            # The response ends: a task the server starts meanwhile (hypercorn's keep-alive timer)
            # is the connection's, not background work of the invocation (see the task factory).
            self._sending = sent = self._send(message)
            return sent
        return self._send(message)

    def expire(self) -> None:
        """At the deadline: answer 504 now if the app has not started its response, and cancel it."""
        self._timed_out = True
        if not self._responding:
            self._answered = True
            headers = [_id_header(self.aws_request_id)]
            answer = send_json(self._send, 504, {"message": "Endpoint request timed out"}, headers)
            # Its own (empty) context: the answer is not background work of the invocation it ends.
            self._answer = self._task.get_loop().create_task(answer, context=contextvars.Context())
        self._task.cancel()


class _Request(_Invocation):
    """One request's invocation, taken the general way (see `_Lane` for the fast one)."""

    __slots__ = ()
    context_class = _Call
    lc: _Call


class _Lane:
    """The fast path of one middleware on one event loop: its shared context, while it stays in
    service and nothing asks for more than a deadline (no memory ceiling, START lines off).

    A request on the lane skips the pool's hand-out and the generic invocation bookkeeping: one
    LambdaContext, a deadline, the ContextVar, and at its end one stats record and the release.
    Anything else (an error, a timeout, logging on, a scratch directory to check) ends the
    general way, through `_Invocation.around`.
    """

    __slots__ = ("ctx", "current_task", "loop", "pool", "recorder", "running", "thread", "timeout", "watch")

    def __init__(self, function: Engine, pool: Pool, ctx: ExecutionContext) -> None:
        self.pool = pool
        self.ctx = ctx
        self.loop = pool.loop
        self.thread = pool.thread
        self.running = pool.loop_running
        self.current_task = pool.current_task
        self.watch = pool.watch
        self.recorder = function.recorder
        self.timeout = function.config.timeout

    def open(self) -> bool:
        """Whether the next request may take the lane (its loop running here is checked first)."""
        ctx = self.ctx
        if ctx.retired or self.pool.closed or ctx._tmp is not None:
            return False
        real = _LazyLogger._real  # (START/END/REPORT lines are written the general way)
        return real is None or not real.isEnabledFor(INFO)

    @staticmethod
    def fits(function: Engine, pool: Pool) -> bool:
        config = function.config
        return pool.loop is not None and config.concurrency is None and config.memory_mb is None


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
        # (On the lane while its loop runs here, its context serves, and START lines are off.)
        if lane is None or lane.thread != get_ident() or not lane.running() or not lane.open():
            await self._general(scope, receive, send)
            return
        ctx = lane.ctx
        started = monotonic()
        lc = _Call(ctx, None, started + lane.timeout, False)
        lc._send = send
        task = lane.current_task(lane.loop)  # type: ignore[arg-type]  # (a loop's pool)
        assert task is not None
        lc._task = task
        lc._invocation = lc._answer = None
        lc._responding = lc._timed_out = lc._answered = False
        ctx.active += 1
        ctx._serial += 1  # a new invocation: resources are checked again at their first use
        ctx.invocations += 1
        scope[SCOPE_KEY] = lc
        watch = lane.watch
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
                lane.pool.release(ctx)
                raise
            task.uncancel()
        except BaseException as exc:  # KeyboardInterrupt, SystemExit...: passed on as without lambdify
            cancel_stray_tasks(lc)
            _Request.around(self.function, lc, started).escape(lane.pool, exc)
            raise
        finally:
            watch.discard(lc)
            _current.reset(token)
        if error is None and not lc._timed_out and ctx._tmp is None:
            # (Kept in the recent invocations of the stats: it must not keep the server's objects alive.)
            lc._task = lc._send = None  # type: ignore[assignment]
            lane.recorder.record(lc, started, monotonic(), None, False)
            lane.pool.release_shared(ctx)
            return
        await self._end(_Request.around(self.function, lc, started), lane.pool, error)

    async def _general(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request off the lane: through the pool (which may create a context or throttle), on
        any loop; it opens the lane for the requests after it when the function fits."""
        function = self.function
        try:
            pool = function.loop_pool()
        except RuntimeError:  # no asyncio loop runs here: trio (or another anyio backend)
            pool = None
        if pool is None:  # (outside the `except`: the app's exceptions must not chain to that one)
            await self._portable(scope, receive, send)
            return
        ctx = pool.take()
        cold = False
        request_id = None
        if ctx is None:
            request_id = new_request_id()
            try:
                ctx, cold = await pool.aacquire(request_id)
            except (TooManyRequests, FunctionError) as exc:
                await _refuse(send, exc, request_id)
                return
        request = _Request(function, ctx, request_id, cold, None)
        task = pool.current_task(pool.loop)  # type: ignore[arg-type]  # (a loop's pool)
        assert task is not None
        lc = request.lc
        lc._follow(send, task, request if request.ceiling is not None else None)
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
            request.escape(pool, exc)
            raise
        finally:
            watch.discard(lc)
            _current.reset(token)
        if _Lane.fits(function, pool) and (self._lane is None or self._lane.pool is not pool or self._lane.ctx.retired):
            self._lane = _Lane(function, pool, ctx)
        await self._end(request, pool, error)

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
            if not lc._answered:
                raise ResponseCutOff(
                    f"RequestId: {lc.aws_request_id} timed out after its response had started"
                ) from None
        except MemoryLimitExceeded:
            if not lc._responding:
                await _answer_out_of_memory(lc._send, lc.aws_request_id)
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
        ctx = pool.take()
        cold = False
        request_id = None
        if ctx is None:
            request_id = new_request_id()
            try:
                ctx, cold = await acquire(function, pool, request_id)
            except (TooManyRequests, FunctionError) as exc:
                await _refuse(send, exc, request_id)
                return
        invocation = _Invocation(function, ctx, request_id, cold, None)
        lc = invocation.lc
        scope[SCOPE_KEY] = lc
        ctx._serial += 1
        ctx.invocations += 1
        responding = answered = False

        async def send_wrapper(message: Message) -> None:
            nonlocal responding, answered
            if answered:
                return
            if not responding and message["type"] == "http.response.start":
                responding = True
                if invocation.ceiling is not None and _over(invocation, invocation.ceiling):
                    answered = True
                    await _answer_out_of_memory(send, lc.aws_request_id)
                    return
            await send(message)

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
                await send_json(send, 504, {"message": "Endpoint request timed out"}, [_id_header(lc.aws_request_id)])
        app_error: BaseException | None = None
        try:
            invocation.finish(pool, None, error)
        except InvocationTimeout:
            if not answered:
                raise ResponseCutOff(
                    f"RequestId: {lc.aws_request_id} timed out after its response had started"
                ) from None
        except MemoryLimitExceeded:
            if not responding:
                await _answer_out_of_memory(send, lc.aws_request_id)
        except FunctionError:
            app_error = error
        if app_error is not None:
            raise app_error  # the app's own exception, unchanged (raised outside `except`: no chaining)


async def _nothing() -> None:
    pass


async def _refuse(send: Send, exc: LambdifyError, request_id: str) -> None:
    """Answer a request that got no context: throttled (429), or its INIT failed (502)."""
    if isinstance(exc, TooManyRequests):
        await send_json(send, 429, {"message": "Too Many Requests"}, [_id_header(request_id)])
    else:
        logger.error("RequestId: %s INIT failed: %s", request_id, exc)
        await send_json(send, 502, {"message": "Internal Server Error"}, [_id_header(request_id)])


def _id_header(request_id: str) -> tuple[bytes, bytes]:
    return (b"x-amzn-requestid", request_id.encode())


def _over(invocation: _Invocation, ceiling: int) -> bool:
    peak = peak_rss_mb()
    return peak > ceiling and peak > invocation.peak_before


async def _answer_out_of_memory(send: Send, request_id: str) -> None:
    await send_json(send, 500, {"message": "Memory limit exceeded"}, [_id_header(request_id)])


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

            rest = below(self.status_path, scope["path"])
            if rest is not None:
                await self.status.serve(scope, receive, send, rest)
                return
        await super().__call__(scope, receive, send)
