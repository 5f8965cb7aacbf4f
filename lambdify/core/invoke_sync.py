"""Running an invocation from sync code: the handler and its flush run on the context's thread
while the caller waits for them, with the deadline as timeout (`invoke()` of a sync handler,
`fn.wsgi`, `WSGIMiddleware` off the main thread)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .background import flush_here
from .current import _current
from .errors import FunctionError
from .invocation import _Invocation, _TimedOut
from .lambda_context import LambdaContext

if TYPE_CHECKING:
    from .context import ExecutionContext
    from .engine import Engine


def invoke(function: Engine, event: Any, request_id: str, deadline: float | None = None) -> Any:
    """One invocation from sync code, by the driver that fits the handler and its backend."""
    function.check_health()
    if function.is_async and function.backend.run_sync is None:
        from .invoke_async import run_on_owned_loop  # (asyncio: only for async handlers)

        return run_on_owned_loop(function, event, request_id, deadline)
    return run_sync(function, event, request_id, deadline)


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
