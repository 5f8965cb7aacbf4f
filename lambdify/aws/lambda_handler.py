"""`lambda_handler(app)`: an ASGI or WSGI app (or a middleware wrapping one) as the
`handler(event, context)` that Lambda's Python runtime calls.

The process is the execution context, as in `runtime.py`: one ExecutionContext, built at INIT;
one event loop for the environment's whole life, run in the runtime's own thread while an
invocation runs (an ASGI app runs on it there; a WSGI app runs inline). Per event: the HTTP
source is detected (`http.events.sources`), the event read into a scope or environ
(`http.events.scope`/`environ`), the app run, deferred work and stray tasks flushed, and the
response written back as that source's result (`http.events.result`). Any other event goes to
`on_event(event, context)`.

Lambda itself enforces the deadline and memory, prints START/END/REPORT and freezes the
environment between invocations; lambdify does not repeat any of it here.
"""

from __future__ import annotations

import contextvars
import os
import signal
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..core import hooks
from ..core import marshal as _json
from ..core.background import install_task_factory
from ..core.context import ExecutionContext
from ..core.current import _current
from ..core.engine import Counters, Engine, is_async
from ..core.errors import FunctionError
from ..core.logs import logger
from ..core.payload import MAX_RESPONSE
from ..core.resources import _is_awaitable
from ..http.asgi_middleware import MIDDLEWARE_DEFAULTS, ASGIMiddleware, middleware_function
from ..http.events.environ import wsgi_environ
from ..http.events.result import lambda_result
from ..http.events.result import v2_result as _v2_result
from ..http.events.scope import asgi_scope
from ..http.events.sources import describe_event, http_source
from ..http.wsgi_middleware import WSGIMiddleware
from .context import AwsLambdaContext
from .cycle import Cycle as _Cycle
from .cycle import awaited as _awaited
from .cycle import call_and_flush as _call_and_flush
from .cycle import flush as _flush
from .lifespan import Lifespan
from .stepping import new_loop, run_task

if TYPE_CHECKING:
    import asyncio

    from ..core.lambda_context import LambdaContext

__all__ = ["LambdaHandler", "lambda_handler"]


def _on_aws() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_RUNTIME_API"))


def lambda_handler(app: Any, *, on_event: Callable[..., Any] | None = None, **options: Any) -> LambdaHandler:
    """The `handler(event, context)` for AWS Lambda's Python runtime, serving `app`.

    ```python
    from fastapi import FastAPI
    from lambdify import lambda_handler

    app = FastAPI()
    handler = lambda_handler(app)          # Lambda's handler setting: "main.handler"
    ```
    `app` is an ASGI app, a WSGI app, or an `ASGIMiddleware`/`WSGIMiddleware` (whose options
    apply). Options are `@handler`'s (`init`, `name`, ...). API Gateway (REST and HTTP API),
    Function URL and ALB events are served by the app; any other event goes to
    `on_event(event, context)`, and without it fails with a `FunctionError` naming its source.
    On AWS, the ASGI lifespan startup and `init` run now (Lambda's INIT phase); elsewhere at
    the first call.
    """
    return LambdaHandler(app, on_event=on_event, **options)


_handlers: weakref.WeakSet[LambdaHandler] = weakref.WeakSet()


def _at_exit() -> None:
    # An interpreter that exits (off AWS: a test, a script) ends each environment as SIGTERM would.
    for handler in list(_handlers):
        handler.shutdown()


hooks.at_exit(_at_exit)


class LambdaHandler:
    """What `lambda_handler` returns: call it as `handler(event, context)`; `shutdown()` ends the
    environment (on AWS it runs on SIGTERM)."""

    def __init__(self, app: Any, *, on_event: Callable[..., Any] | None = None, **options: Any) -> None:
        if on_event is not None and not callable(on_event):
            raise TypeError(f"on_event must be a callable taking (event, context), got {on_event!r}")
        target, function, is_asgi = _unwrap(app, options)
        self.app = app
        self.function = function
        self.on_event = on_event
        self._target = target
        self._asgi = is_asgi
        self._on_event_async = on_event is not None and is_async(on_event)
        self._target_is_coroutine = is_async(target)
        self._ctx: ExecutionContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lifespan: Lifespan | None = None
        self._cold = True
        self._closed = False
        self._timeout = function.config.timeout
        counters = Counters()  # (invocations that went well, counted here: Lambda calls from one thread)
        function.count_pool(counters)
        self._counts = counters.counts
        _handlers.add(self)
        if _on_aws():
            self._init()  # Lambda's INIT phase: the module is being imported by the runtime
            self._handle_sigterm()

    def __repr__(self) -> str:
        return f"<LambdaHandler {self.function.config.name} {'ASGI' if self._asgi else 'WSGI'} app {self._target!r}>"

    # -- the environment's life -------------------------------------------------------------

    def _init(self) -> None:
        function = self.function
        ctx = ExecutionContext(function, None)
        started = time.perf_counter()
        if self._asgi:
            ctx._private_loop = self._new_loop()  # the context's async code runs on the one loop
        ctx.init_here()
        if self._asgi:
            lifespan = Lifespan(self._target, self._event_loop())
            lifespan.startup()
            self._lifespan = lifespan if lifespan.supported else None
        ctx.init_ms = (time.perf_counter() - started) * 1000
        function.cold_started(ctx.init_ms)
        self._ctx = ctx

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop = new_loop()
        install_task_factory(loop)
        return loop

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._new_loop()
            if self._ctx is not None:
                self._ctx._private_loop = loop
        return loop

    def shutdown(self) -> None:
        """End the environment: the ASGI lifespan shutdown, then SHUTDOWN hooks and resources; the loop closes."""
        if self._closed:
            return
        self._closed = True
        grace = self.function.config.shutdown_grace
        if self._lifespan is not None:
            self._lifespan.shutdown(grace)
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            ctx.close_here()  # (closes the loop too: it is the context's)
        elif self._loop is not None:
            self._loop.close()
        self._loop = None

    def _handle_sigterm(self) -> None:
        # Lambda sends SIGTERM before it ends an environment (when an extension is registered);
        # without a handler the process would just die, skipping the app's shutdown.
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            logger.info("SIGTERM: shutting down")
            try:
                self.shutdown()
            except Exception:
                logger.exception("shutting down on SIGTERM failed")
            if callable(previous):
                previous(signum, frame)
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
            # Not sys.exit(): the runtime's polling thread, blocked on the Runtime API, would
            # keep the interpreter from exiting.
            os._exit(0)

        signal.signal(signal.SIGTERM, on_sigterm)

    # -- one invocation -----------------------------------------------------------------------

    def __call__(self, event: Any, context: Any) -> Any:
        ctx = self._ctx
        if ctx is None:
            if self._closed:
                raise RuntimeError("this lambda_handler was shut down")
            self._init()
            ctx = self._ctx
            assert ctx is not None
        cold = self._cold
        if cold:
            self._cold = False
        ctx._serial += 1  # a new invocation: resources are checked again at their first use
        ctx.invocations += 1
        lc = AwsLambdaContext(ctx, context, cold, self._timeout)
        try:
            source = http_source(event)
            if source is None:
                result = self._other(event, context, lc)
            elif self._asgi:
                result = self._serve_asgi(source, event, context, lc)
            else:
                result = self._serve_wsgi(source, event, context, lc)
        except BaseException as exc:
            self.function.invoked(cold, exc, None)
            raise
        self._counts["cold_starts" if cold else "warm_starts"] += 1
        return result

    def _serve_asgi(self, source: str, event: dict[str, Any], aws_context: Any, lc: LambdaContext) -> Any:
        scope, body = asgi_scope(source, event)
        scope["lambdify.context"] = lc
        scope["lambdify.aws_event"] = scope["aws.event"] = event  # (aws.*: Mangum's names)
        scope["lambdify.aws_context"] = scope["aws.context"] = aws_context
        lifespan = self._lifespan
        if lifespan is not None:
            scope["state"] = lifespan.state.copy()
        loop = self._loop
        assert loop is not None
        cycle = _Cycle(loop, body)
        # The task runs in a copy of this context with the invocation set as current. (A Task made
        # directly, not by the loop's task factory, which would count it as one the invocation left
        # running; what the app starts in it, the factory counts.)
        token = _current.set(lc)
        run = contextvars.copy_context()
        _current.reset(token)
        if self._target_is_coroutine:  # (the app's own coroutine is the task: no coroutine of ours around it)
            app = self._target(scope, cycle.receive, cycle.send)
        else:  # (an app that is a plain callable runs in the task too, as a server would run it)
            app = _awaited_call(self._target, scope, cycle.receive, cycle.send)
        error: Exception | None = None
        try:
            run_task(loop, app, run)
        except Exception as exc:
            error = exc
        if not cycle.done:
            cycle.end()
        if lc._deferred or lc._tasks:
            run_task(loop, _flush(lc), run)
        else:
            lc._done = True
        if error is not None:
            if not cycle.done:
                raise error  # Lambda reports it; the service answers 502
            logger.error("RequestId: %s the app raised after its response", lc.aws_request_id, exc_info=error)
        status = cycle.status
        if status is None:
            raise RuntimeError("the ASGI app returned without sending a response")
        chunks = cycle.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if source == "v2":
            result = _v2_result(status, cycle.headers, body)
        else:
            result = lambda_result(source, status, cycle.headers, body)
        return _checked(source, result, lc)

    def _serve_wsgi(self, source: str, event: dict[str, Any], aws_context: Any, lc: LambdaContext) -> Any:
        scope, body = asgi_scope(source, event)
        environ = wsgi_environ(scope, body)
        environ["lambdify.context"] = lc
        environ["lambdify.aws_event"] = environ["aws.event"] = event
        environ["lambdify.aws_context"] = environ["aws.context"] = aws_context
        response: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            if exc_info is not None and response:
                raise exc_info[1].with_traceback(exc_info[2])
            response[:] = [status, headers]
            return chunks.append

        chunks: list[bytes] = []
        token = _current.set(lc)
        try:
            iterable: Iterable[bytes] = self._target(environ, start_response)
            try:
                chunks.extend(iterable)
            finally:
                close = getattr(iterable, "close", None)
                if close is not None:
                    close()
        finally:
            _current.reset(token)
            self._flush_sync(lc)
        status, headers = response
        pairs = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        result = lambda_result(source, int(status[:3]), pairs, b"".join(chunks))
        return _checked(source, result, lc)

    def _other(self, event: Any, aws_context: Any, lc: LambdaContext) -> Any:
        on_event = self.on_event
        if on_event is None:
            raise FunctionError(
                "Runtime.UnsupportedEvent",
                f"lambda_handler got {describe_event(event)}, which is not an HTTP event, and has no on_event "
                "to handle it: pass lambda_handler(app, on_event=handle) to take such events",
                None,
                lc.aws_request_id,
            )
        if self._on_event_async:
            loop = self._event_loop()
            run = contextvars.copy_context()
            run.run(_current.set, lc)
            return run_task(loop, _call_and_flush(on_event, event, lc), run)
        token = _current.set(lc)
        try:
            result = on_event(event, lc)
            if _is_awaitable(result):
                result = self._event_loop().run_until_complete(_awaited(result))
        finally:
            _current.reset(token)
            self._flush_sync(lc)
        return result

    def _flush_sync(self, lc: LambdaContext) -> None:
        """The flush after sync code: on the one loop, in a task that is not the invocation's own."""
        if not (lc._deferred or lc._tasks):
            lc._done = True
            return
        loop = self._event_loop()
        run = contextvars.copy_context()
        run.run(_current.set, lc)
        run_task(loop, _flush(lc), run)


_CHECK_SIZE_FROM = MAX_RESPONSE // 8  # (base64 makes a body 4/3 longer; JSON escapes at most 6x)


async def _awaited_call(app: Any, *args: Any) -> Any:
    return await app(*args)


def _checked(source: str, result: dict[str, Any], lc: LambdaContext) -> dict[str, Any]:
    """Lambda refuses a result over 6 MB (the caller sees a 502 anyway): make that a clear 502 here."""
    if len(result["body"]) < _CHECK_SIZE_FROM:
        return result
    size = len(_json.marshal(result))
    if size <= MAX_RESPONSE:
        return result
    logger.error(
        "RequestId: %s the response (%d bytes as Lambda's JSON) is over Lambda's %d-byte limit; answering 502",
        lc.aws_request_id,
        size,
        MAX_RESPONSE,
    )
    body = b'{"message": "Response payload too large for AWS Lambda"}'
    return lambda_result(source, 502, [(b"content-type", b"application/json")], body)


def _unwrap(app: Any, options: dict[str, Any]) -> tuple[Any, Engine, bool]:
    """(the app to run, its engine, whether it is ASGI) for an app or a middleware wrapping one."""
    if isinstance(app, ASGIMiddleware | WSGIMiddleware):
        engine = app.function
        if options:
            engine = Engine(app.app, engine.config.replace(**options), engine.backend)
        return app.app, engine, isinstance(app, ASGIMiddleware)
    if not callable(app):
        raise TypeError(f"lambda_handler needs an ASGI or WSGI app, got {app!r}")
    asgi = _is_asgi(app)
    engine = middleware_function(app, {**MIDDLEWARE_DEFAULTS, "concurrency": 1}, dict(options))
    return app, engine, asgi


def _is_asgi(app: Any) -> bool:
    if is_async(app):
        return True
    import inspect

    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        parameters = None
    if parameters is not None:
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) == 3:
            return True
        if len(positional) == 2:
            return False
    raise TypeError(
        f"lambda_handler cannot tell whether {app!r} is an ASGI or a WSGI app: wrap it in "
        "ASGIMiddleware(app) or WSGIMiddleware(app) to say which"
    )
