"""One function served over HTTP (`fn.asgi`): request → Lambda event → invocation → response.

The response goes out as soon as the handler's result is ready; deferred work is flushed
after it, inside the same ASGI call, so servers (uvicorn waits for running requests on
SIGTERM) do not exit before it ends. A client that disconnects does not cancel the
invocation, as on Lambda.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ..core.current import new_request_id
from ..core.errors import FunctionError, InvocationTimeout, TooManyRequests
from ..core.invoke_async import run_async
from ..core.logs import logger
from ..core.marshal import marshal
from .events import BadResponse, request_event, response_from_result

if TYPE_CHECKING:
    from ..core.engine import Engine
    from .types import Receive, Scope, Send

MAX_SYNC_PAYLOAD: Final = 6 * 1024 * 1024
_JSON: Final = (b"content-type", b"application/json")
_PROTOCOLS: Final = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0", "2": "HTTP/2"}


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; `_TooLarge` past `limit` bytes, `_Disconnected` if the client left."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if message["type"] == "http.disconnect":
            raise _Disconnected
        if len(body) > limit:
            raise _TooLarge
        return body
    # More is coming: refuse a body declared too large before reading any more of it.
    declared = declared_length(scope)
    if declared is not None and declared > limit:
        raise _TooLarge
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def send_json(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None, head: bool = False
) -> None:
    body = marshal(payload)  # as Lambda's runtime writes it (a `bytes` result goes as it is)
    raw_headers = [_JSON, (b"content-length", str(len(body)).encode()), *(headers or ())]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def send_response(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve_http(function: Engine, scope: Scope, receive: Receive, send: Send, raw_path: str) -> None:
    """Serve one HTTP request as one invocation of `function`."""
    request_id = new_request_id()
    id_header = (b"x-amzn-requestid", request_id.encode())
    head = scope["method"] == "HEAD"
    try:
        body = await read_body(scope, receive, MAX_SYNC_PAYLOAD)
    except _TooLarge:
        await send_json(send, 413, {"message": "Request Entity Too Large"}, [id_header], head)
        return
    except _Disconnected:
        return
    event_format = function.config.event_format
    event = request_event(
        event_format,
        method=scope["method"],
        raw_path=raw_path,
        query_string=scope.get("query_string", b""),
        headers=scope["headers"],
        body=body,
        source_ip=client[0] if (client := scope.get("client")) else "127.0.0.1",
        protocol=_PROTOCOLS.get(scope.get("http_version", "1.1")) or f"HTTP/{scope['http_version']}",
        request_id=request_id,
        function_name=function.config.name,
    )
    sent = False

    async def ready(result: Any, failure: FunctionError | None) -> None:
        nonlocal sent
        sent = True
        if failure is not None:
            await send_json(send, 502, {"message": "Internal Server Error"}, [id_header], head)
            return
        try:
            status, headers, payload = response_from_result(event_format, result, head=head)
        except BadResponse as exc:
            logger.error("RequestId: %s %s: malformed response: %s", request_id, function.config.name, exc)
            await send_json(send, 502, {"message": "Internal Server Error"}, [id_header], head)
            return
        headers.append(id_header)
        await send_response(send, status, headers, payload)

    try:
        await run_async(function, event, request_id, on_ready=ready)
    except InvocationTimeout:
        if not sent:
            await send_json(send, 504, {"message": "Endpoint request timed out"}, [id_header], head)
    except TooManyRequests:
        await send_json(send, 429, {"message": "Too Many Requests"}, [id_header], head)
    except FunctionError as error:
        if not sent:  # INIT failed: there was no result to send
            await send_json(send, 502, {"message": "Internal Server Error"}, [id_header], head)
        elif error.error_type != "Runtime.OutOfMemory":
            logger.debug("RequestId: %s failed after its response was sent: %s", request_id, error)


class FunctionASGI:
    """`fn.asgi`: an ASGI app that serves one function at every path (as a Function URL does)."""

    def __init__(self, function: Engine) -> None:
        self.function = function

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await serve_http(self.function, scope, receive, send, raw_route_path(scope))
        elif kind == "lifespan":
            await run_lifespan(receive, send, self.function.astart, self.function.ashutdown)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})


def raw_route_path(scope: Scope) -> str:
    """The request path below any mount point, still percent-encoded as the client sent it."""
    root = scope.get("root_path", "")
    raw = scope.get("raw_path")
    if raw is None:
        from urllib.parse import quote

        path = scope["path"]
        return quote(path[len(root) :] if root and path.startswith(root) else path, safe="/:@!$&'()*+,;=-._~")
    text = raw.decode("latin-1")
    if root:
        from urllib.parse import quote

        for prefix in (root, quote(root, safe="/")):
            if text.startswith(prefix):
                return text[len(prefix) :] or "/"
    return text or "/"


async def run_lifespan(receive: Receive, send: Send, startup: Any, shutdown: Any) -> None:
    """ASGI lifespan: `startup()` on startup, `shutdown()` on shutdown, failures reported to the server."""
    while True:
        message = await receive()
        phase = message["type"].rpartition(".")[2]  # "startup" or "shutdown"
        try:
            await (startup if phase == "startup" else shutdown)()
        except Exception as exc:
            logger.exception("%s failed", phase)
            await send({"type": f"lifespan.{phase}.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": f"lifespan.{phase}.complete"})
        if phase == "shutdown":
            return
