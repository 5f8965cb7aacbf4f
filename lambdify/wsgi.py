"""WSGI surfaces: `fn.wsgi` (a function served by any WSGI server).

The handler runs on its execution context's thread while the request thread waits with the
deadline, so a stuck handler costs a 504, not a server thread. The response is returned as
soon as the handler's result is ready; the flush of deferred work finishes in the response's
`close()`, which WSGI servers call after sending it, before the worker takes the next request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

from .context import new_request_id
from .endpoint import MAX_SYNC_PAYLOAD
from .errors import FunctionError, InvocationTimeout, MemoryLimitExceeded, TooManyRequests
from .events import BadResponse, request_event, response_from_result
from .invocation import SyncRun
from .logs import logger

if TYPE_CHECKING:
    from .function import Function

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}


def status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Unknown')}"


def raw_request(environ: Environ) -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
    """(raw path below SCRIPT_NAME, raw query string, header pairs) from a WSGI environ."""
    from urllib.parse import quote

    path = environ.get("PATH_INFO", "") or "/"
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")  # gunicorn, uWSGI: as the client sent it
    script = environ.get("SCRIPT_NAME", "")
    if raw:
        raw = raw.split("?", 1)[0]
        quoted_script = quote(script)
        raw_path = raw[len(quoted_script) :] if script and raw.startswith(quoted_script) else raw
    else:
        raw_path = quote(path.encode("latin-1").decode("utf-8", "replace"))
    headers = [
        (key[5:].replace("_", "-").lower().encode("latin-1"), str(value).encode("latin-1"))
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    for key, name in (("CONTENT_TYPE", b"content-type"), ("CONTENT_LENGTH", b"content-length")):
        if environ.get(key):
            headers.append((name, environ[key].encode("latin-1")))
    return raw_path or "/", environ.get("QUERY_STRING", "").encode("latin-1"), headers


def read_input(environ: Environ, limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit`."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        return None
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    body: bytes = stream.read(length) if length else stream.read(limit + 1)
    return None if len(body) > limit else body


def json_response(start_response: StartResponse, status: int, message: str, request_id: str) -> list[bytes]:
    body = json.dumps({"message": message}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("x-amzn-RequestId", request_id),
    ]
    start_response(status_line(status), headers)
    return [body]


class _Flushing:
    """A response body whose `close()` waits for the invocation's flush (the WSGI `waitUntil`)."""

    def __init__(self, chunks: Iterable[bytes], run: SyncRun) -> None:
        self._chunks = chunks
        self._run = run

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        error = self._run.settle()
        if error is not None:
            logger.debug("RequestId: %s failed after its response was sent: %s", self._run.lc.aws_request_id, error)


class FunctionWSGI:
    """`fn.wsgi`: a WSGI app that serves one function at every path."""

    def __init__(self, function: Function[Any]) -> None:
        self.function = function

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        function = self.function
        request_id = new_request_id()
        body = read_input(environ, MAX_SYNC_PAYLOAD)
        if body is None:
            return json_response(start_response, 413, "Request Entity Too Large", request_id)
        raw_path, query, headers = raw_request(environ)
        event_format = function.config.event_format
        event = request_event(
            event_format,
            method=environ["REQUEST_METHOD"],
            raw_path=raw_path,
            query_string=query,
            headers=headers,
            body=body,
            source_ip=environ.get("REMOTE_ADDR") or "127.0.0.1",
            protocol=environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            request_id=request_id,
            function_name=function.config.name,
        )
        if function._is_async or function.config.isolation == "process":
            return self._call_whole(event, request_id, start_response)
        try:
            run = SyncRun(function, event, request_id)
        except TooManyRequests:
            return json_response(start_response, 429, "Too Many Requests", request_id)
        except FunctionError:
            return json_response(start_response, 502, "Internal Server Error", request_id)
        outcome = run.ready()
        if outcome is None:
            if isinstance(run.settle(), InvocationTimeout):
                return json_response(start_response, 504, "Endpoint request timed out", request_id)
            return json_response(start_response, 502, "Internal Server Error", request_id)
        result, failure = outcome
        chunks = self._respond(start_response, event_format, result, failure, environ, request_id)
        return _Flushing(chunks, run)

    def _call_whole(self, event: Any, request_id: str, start_response: StartResponse) -> Iterable[bytes]:
        # An async handler (on lambdify's own loop) or a child process: the answer waits for the flush.
        try:
            result = self.function._invoke(event, request_id, None)
        except InvocationTimeout:
            return json_response(start_response, 504, "Endpoint request timed out", request_id)
        except TooManyRequests:
            return json_response(start_response, 429, "Too Many Requests", request_id)
        except FunctionError:
            return json_response(start_response, 502, "Internal Server Error", request_id)
        return self._respond(start_response, self.function.config.event_format, result, None, {}, request_id)

    def _respond(
        self,
        start_response: StartResponse,
        event_format: str,
        result: Any,
        failure: FunctionError | None,
        environ: Environ,
        request_id: str,
    ) -> list[bytes]:
        if failure is not None:
            return json_response(start_response, 502, "Internal Server Error", request_id)
        try:
            status, raw_headers, payload = response_from_result(
                event_format, result, head=environ.get("REQUEST_METHOD") == "HEAD"
            )
        except BadResponse as exc:
            logger.error("RequestId: %s %s: malformed response: %s", request_id, self.function.config.name, exc)
            return json_response(start_response, 502, "Internal Server Error", request_id)
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw_headers]
        headers.append(("x-amzn-RequestId", request_id))
        start_response(status_line(status), headers)
        return [payload]


class _Response:
    """What the wrapped WSGI app produced, collected on the execution context's thread."""

    __slots__ = ("body", "exc_info", "headers", "status")

    def __init__(self) -> None:
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.exc_info: Any = None


class WSGIMiddleware:
    """Each request to the wrapped WSGI app (Flask, Django, ...) is an invocation on a per-worker
    execution context, one request per context at a time.

    ```python
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, timeout=10, init=setup)   # Flask
    ```
    The app runs on its context's thread while the server thread waits with the deadline, so a
    slow request gets a 504 and the server thread is free again. The response body is
    collected within the deadline, then sent; deferred work is flushed after it.
    """

    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]], **options: Any) -> None:
        from .asgi import MIDDLEWARE_DEFAULTS, middleware_function

        self.app = app
        self.function = middleware_function(app, {**MIDDLEWARE_DEFAULTS, "concurrency": 1}, options)

    def _run_app(self, environ: Environ, context: Any) -> _Response:
        environ["lambdify.context"] = context
        response = _Response()

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            response.status, response.headers, response.exc_info = status, headers, exc_info
            return response.body.append  # the legacy write() callable

        chunks = self.app(environ, start_response)
        try:
            response.body.extend(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return response

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request_id = new_request_id()
        try:
            run = SyncRun(self.function, environ, request_id, target=self._run_app)
        except TooManyRequests:
            return json_response(start_response, 429, "Too Many Requests", request_id)
        except FunctionError as exc:
            logger.error("RequestId: %s INIT failed: %s", request_id, exc)
            return json_response(start_response, 502, "Internal Server Error", request_id)
        outcome = run.ready()
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
        return _Flushing(response.body, run)
