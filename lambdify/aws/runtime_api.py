"""The Lambda Runtime API (`/2018-06-01/runtime/...`), served to one runtime process.

What a runtime (AWS's `awslambdaric`, a container image's bootstrap, a custom runtime) finds
at `AWS_LAMBDA_RUNTIME_API`: `GET invocation/next` blocks until there is an event and answers
it with Lambda's headers; `POST invocation/{id}/response`, `invocation/{id}/error` and
`init/error` answer 202. Each emulated execution context has a server of its own on a private
loopback port, so that every request on it is that context's: no request says which process
sent it.

A small HTTP/1.1 server on asyncio's streams (keep-alive, `Content-Length` or chunked
bodies): a runtime client is one well-behaved peer, not the open internet.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final, Protocol

from ..core.errors import FunctionError

__all__ = ["PREFIX", "Next", "Runtime", "RuntimeAPIServer", "error_from_body"]

PREFIX: Final = "/2018-06-01/runtime/"
_MAX_HEADER_LINES: Final = 100
_MAX_BODY: Final = 16 * 1024 * 1024  # (Lambda takes 6 MB responses; a runtime's error may add a trace)
_REASONS: Final = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}


class Next:
    """One event as `invocation/next` hands it out: its request id, its headers, its JSON body."""

    __slots__ = ("body", "headers", "request_id")

    def __init__(self, request_id: str, headers: dict[str, str], body: bytes) -> None:
        self.request_id = request_id
        self.headers = headers
        self.body = body


class Runtime(Protocol):
    """The context behind one server: what each Runtime API call does."""

    async def next(self) -> Next:
        """The next event (waits for one): the runtime is ready, its INIT is over."""
        ...

    def answer(self, request_id: str, kind: str, body: bytes, headers: dict[str, str]) -> bool:
        """`response` or `error` for `request_id`; False if no such invocation awaits one."""
        ...

    def init_error(self, body: bytes, headers: dict[str, str]) -> None:
        """The runtime could not initialise (`init/error`)."""
        ...


class _BadRequest(Exception):
    pass


class RuntimeAPIServer:
    """The Runtime API of one runtime process, on 127.0.0.1 at a port of the system's choosing."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.server: asyncio.Server | None = None
        self.address = ""
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> str:
        """Listen; the address (`127.0.0.1:PORT`) for `AWS_LAMBDA_RUNTIME_API`."""
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self.address

    def close(self) -> None:
        """Stop listening and drop every connection (a pending `next` is cancelled)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except _BadRequest as exc:
                    await _respond(writer, 400, _error_body("InvalidRequest", str(exc)), close=True)
                    return
                if request is None:
                    return
                method, path, headers, body = request
                status, extra, payload = await self._route(method, path, headers, body)
                await _respond(writer, status, payload, extra)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        path = path.split("?", 1)[0]
        if not path.startswith(PREFIX):
            return 404, {}, _error_body("NotFound", f"no such Runtime API path: {path}")
        route = path[len(PREFIX) :]
        accepted = b'{"status":"OK"}'
        if route == "invocation/next" and method == "GET":
            item = await self.runtime.next()
            return 200, {**item.headers, "Content-Type": "application/json"}, item.body
        if route == "init/error" and method == "POST":
            self.runtime.init_error(body, headers)
            return 202, {}, accepted
        parts = route.split("/")
        if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error") and method == "POST":
            if self.runtime.answer(parts[1], parts[2], body, headers):
                return 202, {}, accepted
            message = f"Invalid request ID: {parts[1]} is not an invocation in progress"
            return 400, {}, _error_body("InvalidRequestID", message)
        return 404, {}, _error_body("NotFound", f"no such Runtime API call: {method} {path}")


def error_from_body(body: bytes, headers: dict[str, str], request_id: str | None) -> FunctionError:
    """A runtime's `error` or `init/error` payload (`errorType`, `errorMessage`, `stackTrace`)."""
    try:
        payload = json.loads(body) if body else {}
    except ValueError:
        payload = {"errorMessage": body.decode("utf-8", "replace")}
    if not isinstance(payload, dict):
        payload = {"errorMessage": json.dumps(payload)}
    error_type = payload.get("errorType") or headers.get("lambda-runtime-function-error-type") or "Unhandled"
    trace = payload.get("stackTrace")
    if not isinstance(trace, list):
        trace = []
    return FunctionError(str(error_type), str(payload.get("errorMessage", "")), [str(t) for t in trace], request_id)


def _error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None
    try:
        method, path, _version = line.decode("latin-1").split()
    except ValueError:
        raise _BadRequest(f"malformed request line: {line[:100]!r}") from None
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADER_LINES):
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise _BadRequest("too many header lines")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        length = int(headers.get("content-length") or 0)
        if length > _MAX_BODY:
            raise _BadRequest(f"body of {length} bytes is too large")
        body = await reader.readexactly(length) if length else b""
    return method, path, headers, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # (trailers)
            return b"".join(chunks)
        total += size
        if total > _MAX_BODY:
            raise _BadRequest("chunked body is too large")
        chunks.append(await reader.readexactly(size))
        await reader.readline()


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str] | None = None, close: bool = False
) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    if "Content-Type" not in (headers or {}):
        lines.append("Content-Type: application/json")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
