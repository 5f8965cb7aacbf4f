"""WSGI surfaces: `fn.wsgi` (a function served by any WSGI server).

The handler runs on its execution context's thread while the request thread waits with the
deadline, so a stuck handler costs a 504, not a server thread. The response is returned as
soon as the handler's result is ready; the flush of deferred work finishes in the response's
`close()`, which WSGI servers call after sending it, before the worker takes the next request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..core.current import new_request_id
from ..core.errors import FunctionError, InvocationTimeout, TooManyRequests
from ..core.invoke_sync import SyncRun, invoke
from ..core.logs import logger
from .events import BadResponse, request_event, response_from_result
from .function_asgi import MAX_SYNC_PAYLOAD

if TYPE_CHECKING:
    from ..core.engine import Engine

from .wsgi import Environ, StartResponse, _Flushing, json_response, raw_request, read_input, status_line


class FunctionWSGI:
    """`fn.wsgi`: a WSGI app that serves one function at every path."""

    def __init__(self, function: Engine) -> None:
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
        if function.is_async or function.config.isolation == "process":
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
            result = invoke(self.function, event, request_id)
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
