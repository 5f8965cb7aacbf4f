"""`WSGIMiddleware`: wrap an existing WSGI app (Flask, Django...) so that each request is an
invocation on a per-worker execution context.

On the process's main thread (gunicorn's sync worker, wsgiref) the app runs inline, under a
SIGALRM deadline (`isolation.main_thread`); elsewhere (gthread, waitress) it is handed to the
context's own thread, so that the caller is answered at the deadline even while the app is stuck.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..core.background import flush_here
from ..core.current import _current, new_request_id
from ..core.errors import FunctionError, InvocationTimeout, MemoryLimitExceeded, TooManyRequests
from ..core.invocation import _Invocation, _TimedOut
from ..core.invoke_sync import SyncRun
from ..core.logs import logger
from ..isolation import main_thread

if TYPE_CHECKING:
    from ..core.pool import Pool

from .wsgi import _EMPTY, Environ, StartResponse, _Body, _Flushing, _refuse, json_response


class WSGIMiddleware:
    """Each request to the wrapped WSGI app (Flask, Django, ...) is an invocation on a per-worker
    execution context, one request per context at a time.

    ```python
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, timeout=10, init=setup)   # Flask, or:
    app = WSGIMiddleware(flask_app, timeout=10)
    ```
    On the process's main thread (gunicorn's sync worker, wsgiref) the app runs right there,
    under a SIGALRM deadline (see `isolation.main_thread`). On other threads (gthread, waitress)
    it runs on its context's thread while the server thread waits with the deadline, so that a
    stuck request still gets its 504 and the server thread is free again; the response body is
    collected within the deadline, then sent. Deferred work is flushed once the body has been
    read to the end or closed.
    """

    def __new__(cls, app: Callable[[Environ, StartResponse], Iterable[bytes]], **options: Any) -> WSGIMiddleware:
        # With `status_path`, a subclass serves the status endpoints: without it, no request pays a check.
        if options.get("status_path") is not None and cls is WSGIMiddleware:
            return super().__new__(_WithStatus)
        return super().__new__(cls)

    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]], **options: Any) -> None:
        from .asgi_middleware import MIDDLEWARE_DEFAULTS, middleware_function

        options.pop("status_path", None)
        self.app = app
        self.function = middleware_function(app, {**MIDDLEWARE_DEFAULTS, "concurrency": 1}, options)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not main_thread.available():
            return self._hand_off(environ, start_response)
        # Inline, on the main thread.
        pool = self.function.main_thread_pool()
        ctx = pool.take()
        cold = False
        request_id = None
        if ctx is None:
            request_id = new_request_id()
            try:
                ctx, cold = pool.acquire(request_id)
            except (TooManyRequests, FunctionError) as exc:
                return _refuse(start_response, exc, request_id)
        invocation = _Invocation(self.function, ctx, request_id, cold, None)
        return _InlineBody(invocation, pool, start_response).start(self.app, environ)

    # -- handed off to the context's thread ---------------------------------------------

    def _run_app(self, environ: Environ, context: Any) -> _Response:
        environ["lambdify.context"] = context
        response = _Response()

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            response.status, response.headers, response.exc_info = status, headers, exc_info
            return response.body.append  # the legacy write() callable

        chunks = self.app(environ, start_response)
        close = getattr(chunks, "close", None)
        try:
            response.body.extend(chunks)
        except BaseException:
            if close is not None:
                close()
            raise
        if close is not None:
            try:
                close()
            except Exception as exc:  # (the body is whole: raised as the server closes the response)
                response.late = exc
        return response

    def _hand_off(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request_id = new_request_id()
        try:
            run = SyncRun(self.function, environ, request_id, target=self._run_app)
        except (TooManyRequests, FunctionError) as exc:
            return _refuse(start_response, exc, request_id)
        outcome = run.ready()  # (raises a KeyboardInterrupt, SystemExit... of the app's, as is)
        if outcome is None:
            run.settle()
            return json_response(start_response, 504, "Endpoint request timed out", request_id)
        response, failure = outcome
        if failure is not None:
            run.settle()
            if isinstance(failure, MemoryLimitExceeded) or failure.__cause__ is None:
                return json_response(start_response, 500, "Memory limit exceeded", request_id)
            raise failure.__cause__  # the app's own exception, as the server would have seen it
        start_response(response.status, response.headers, response.exc_info)
        return _Flushing(response.body, run, response.late)


class _Response:
    """What the wrapped WSGI app produced, collected on the execution context's thread."""

    __slots__ = ("body", "exc_info", "headers", "late", "status")

    def __init__(self) -> None:
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.exc_info: Any = None
        self.late: Exception | None = None  # what the body's close() raised once it was whole


class _InlineBody(_Body):
    """One inline request: the app called on the main thread under the alarm, and its body.

    The alarm is armed only while the app's code runs (the call and the body's first chunk,
    each later step of the body, its `close()` and the deferred work), so that it never goes
    off in the server's or a test's code between steps. The server's `start_response` is called
    once the app has returned and produced its first chunk, so that a request that times out
    before that still gets its 504.
    """

    __slots__ = (
        "_chunks",
        "_exc_info",
        "at",
        "fired",
        "_first",
        "_headers",
        "_invocation",
        "_iterable",
        "_pool",
        "_sent",
        "_server_start",
        "_status",
        "_write",
    )

    def __init__(self, invocation: _Invocation, pool: Pool, start_response: StartResponse) -> None:
        self._invocation = invocation
        self._pool = pool
        self._server_start = start_response
        self.at = invocation.lc._deadline  # (the body is its own main_thread.Deadline)
        self.fired = False
        self._status: str | None = None
        self._headers: list[tuple[str, str]] = []
        self._exc_info: Any = None
        self._sent = False  # the server has been given the status line
        self._write: Callable[[bytes], Any] | None = None
        self._iterable: Any = None
        self._chunks: Iterator[bytes] = _EMPTY
        self._first: bytes | None = None  # the body's first chunk, taken within the app's call
        self._ended = False
        self._late = None
        invocation.ctx.holder = weakref.ref(self)  # (as _Body.__init__ does, one call less)

    def _timed_out(self) -> InvocationTimeout:
        invocation = self._invocation
        return InvocationTimeout(invocation.timeout, invocation.lc.aws_request_id)

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if self._sent:
            if exc_info is None:
                raise AssertionError("start_response called a second time without exc_info (PEP 3333)")
            return self._server_start(status, headers, exc_info)  # (the server re-raises it)
        self._status, self._headers, self._exc_info = status, headers, exc_info
        return self._legacy_write

    def _legacy_write(self, data: bytes) -> None:
        self._send_status()
        assert self._write is not None
        self._write(data)

    def _send_status(self) -> None:
        if not self._sent and self._status is not None:
            self._sent = True
            self._write = self._server_start(self._status, self._headers, self._exc_info)
            self._exc_info = None

    @main_thread.shielded
    def start(self, app: Callable[[Environ, StartResponse], Iterable[bytes]], environ: Environ) -> Iterable[bytes]:
        invocation = self._invocation
        lc = invocation.lc
        ctx = invocation.ctx
        ctx._serial += 1  # a new invocation: resources are checked again at their first use
        ctx.invocations += 1
        environ["lambdify.context"] = lc
        token = _current.set(lc)
        main_thread.enter(self)
        try:
            self._iterable = iterable = app(environ, self._start_response)
            self._chunks = chunks = iter(iterable)
            for first in chunks:  # (one step: an empty body leaves `_first` None)
                self._first = first
                break
            else:
                self._chunks = _EMPTY
        except BaseException as exc:  # noqa: B036 - each kind is handled in _failed
            main_thread.leave()
            _current.reset(token)
            return self._failed(exc)
        main_thread.leave()
        _current.reset(token)
        if self.fired or time.monotonic() > self.at:
            # (code that never let the alarm's handler run - a long C call, an inner middleware's
            # deadline armed instead - is past its deadline all the same)
            self.fired = True
            return self._failed(None)
        if invocation.ceiling is not None and invocation.outcome(None, None) is not None:
            return self._answer_now(500, "Memory limit exceeded")
        self._send_status()  # (unless the app's write() sent it already)
        self._exc_info = None
        return self

    @main_thread.shielded
    def __next__(self) -> bytes:
        first = self._first
        if first is not None:
            self._first = None
            return first
        if self._ended:
            raise StopIteration
        invocation = self._invocation
        if not main_thread.enter(self):  # it passed while the server wrote
            self._ended = True
            self._finish(_TimedOut())
            raise self._timed_out()  # (the server closes the connection)
        token = _current.set(invocation.lc)
        try:
            chunk = next(self._chunks)
        except StopIteration:
            _current.reset(token)
            self._ended = True
            try:
                self._end(entered=True)  # (still inside: the body's close() and the flush are timed too)
            except Exception as exc:  # the app's body failed to close: the server sees it as it closes ours
                self._late = exc
            raise
        except BaseException as exc:  # noqa: B036 - handled below, then raised on
            main_thread.leave()
            _current.reset(token)
            self._ended = True
            self._finish(exc)
            if self.fired:
                raise self._timed_out() from None  # (the server closes the connection)
            raise
        main_thread.leave()
        _current.reset(token)
        return chunk

    def _failed(self, exc: BaseException | None) -> Iterable[bytes]:
        """The app raised, or ran out of time, before its response was handed to the server."""
        if self.fired:
            if not self._sent:
                return self._answer_now(504, "Endpoint request timed out")
            self._ended = True
            self._finish(_TimedOut())
            raise self._timed_out()  # the status line has gone out: the server closes the connection
        self._ended = True
        assert exc is not None
        self._finish(exc)
        raise exc  # the app's own exception, unchanged, as the server would have seen it

    def _answer_now(self, status: int, message: str) -> list[bytes]:
        """Answer for the app (504, 500) and end the invocation; the app's body is closed unread."""
        self._ended = True
        iterable = self._iterable
        if iterable is not None and hasattr(iterable, "close"):
            try:
                iterable.close()
            except Exception:
                logger.exception("closing the response of a request that timed out failed")
        error: BaseException | None = _TimedOut() if status == 504 else None
        request_id = self._invocation.lc.aws_request_id
        try:
            self._finish(error, decided=status == 500)
        except (InvocationTimeout, MemoryLimitExceeded):
            pass
        return json_response(self._server_start, status, message, request_id)

    @main_thread.shielded
    def _end(self, entered: bool = False) -> None:
        """The body was read to the end or closed: close the app's body, flush, release the context."""
        invocation = self._invocation
        lc = invocation.lc
        timed = entered or main_thread.available()  # (a body collected on another thread runs untimed)
        pushed = entered or (timed and main_thread.enter(self))  # (not if its deadline has passed)
        in_time = pushed or not timed
        token = _current.set(lc)
        error: BaseException | None = None
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
            if not in_time:
                pass  # (past the deadline, the deferred work is dropped, and logged)
            elif lc._deferred or lc._tasks:
                flush_here(invocation.ctx, lc)
            else:
                lc._done = True
        except BaseException as exc:  # noqa: B036 - handled below
            error = exc
        finally:
            if pushed:
                main_thread.leave()
            _current.reset(token)
        if error is None and not self.fired:  # the usual end: straight to the pool
            try:
                invocation.finish(self._pool, None, None, decided=invocation.ceiling is not None)
            except FunctionError:
                pass  # (the memory ceiling, past after the response: counted and logged)
            return
        if self.fired:
            error = _TimedOut()
        try:
            self._finish(error, decided=invocation.ceiling is not None and error is None)
        except FunctionError:
            pass  # (a failure after the response: counted and logged by the invocation)
        if error is not None and not isinstance(error, _TimedOut):
            raise error  # the app's close() raised: the server sees it, as without lambdify

    def _finish(self, error: BaseException | None, decided: bool = False) -> None:
        invocation = self._invocation
        if error is None and not self.fired:
            invocation.finish(self._pool, None, None, decided=decided)
            return
        if isinstance(error, InvocationTimeout) or self.fired:
            error = _TimedOut()
        if error is not None and not isinstance(error, Exception):
            invocation.escape(self._pool, error)
            return
        try:
            invocation.finish(self._pool, None, error, decided=decided)
        except FunctionError:
            if error is None:
                raise
            if not isinstance(error, _TimedOut):
                return  # (logged by the invocation; the caller raises the app's exception)
            raise

    def _describe(self) -> str:
        return f"RequestId: {self._invocation.lc.aws_request_id}"


class _WithStatus(WSGIMiddleware):
    """`WSGIMiddleware(app, status_path="/_lambdify")`: also serves the status page, `stats.json`
    and `metrics` below `status_path` (not invocations of the app)."""

    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]], **options: Any) -> None:
        from .status import Status, status_prefix

        self.status_path = status_prefix(options.get("status_path"))
        super().__init__(app, **options)
        self.status = Status()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        from .status import below

        rest = below(self.status_path, environ.get("PATH_INFO", ""))
        if rest is not None:
            return self.status.respond_wsgi(environ, start_response, rest)
        return super().__call__(environ, start_response)
