"""The status endpoints under `/_lambdify/`: the page, `stats.json` and `metrics`.

```python
app = FunctionApp([hello], status=True)     # GET /_lambdify/, /_lambdify/stats.json, /_lambdify/metrics
```

`stats.json` is `lambdify.stats()` of every worker (see `workers`), each recent invocation with
its log lines; `metrics` is the same in Prometheus' text format; `/_lambdify/` is one static
page (`static/status.html`) that polls `stats.json`. None of it costs anything per invocation
beyond what `lambdify.stats()` records anyway, except the log lines, which are kept (by a
logging handler) once a status endpoint exists, and only for what the `lambdify` logger and the
root logger let through.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from ..core.current import _current
from ..core.registry import snapshot
from . import prometheus, workers

if TYPE_CHECKING:
    from .types import Receive, Scope, Send

__all__ = ["DEFAULT_PATH", "Status"]

DEFAULT_PATH: Final = "/_lambdify"
_KEPT_INVOCATIONS: Final = 200
_KEPT_LINES: Final = 40
_LINE_CHARS: Final = 500


class LogBook(logging.Handler):
    """Keeps the log lines of recent invocations, by request id (for the status page)."""

    book: OrderedDict[str, list[str]] = OrderedDict()
    installed = False

    def __init__(self, own: bool) -> None:
        super().__init__(logging.NOTSET)
        self.own = own  # on the `lambdify` logger (True) or the root logger (False)

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name == "lambdify" or record.name.startswith("lambdify.")
        if ours != self.own:
            return  # (each record once: the lambdify logger's handler takes lambdify's)
        lc = _current.get(None)
        message = record.getMessage()
        if lc is not None:
            request_id = lc.aws_request_id
        elif ours and "RequestId: " in message:
            request_id = message.split("RequestId: ", 1)[1][:36]
        else:
            return
        line = message if ours else f"[{record.levelname}] {record.name}: {message}"
        book = LogBook.book
        lines = book.get(request_id)
        if lines is None:
            lines = book[request_id] = []
            while len(book) > _KEPT_INVOCATIONS:
                book.popitem(last=False)
        if len(lines) < _KEPT_LINES:
            lines.append(line[:_LINE_CHARS])

    @classmethod
    def install(cls) -> None:
        if not cls.installed:
            cls.installed = True
            logging.getLogger("lambdify").addHandler(cls(own=True))
            logging.getLogger().addHandler(cls(own=False))

    @classmethod
    def lines(cls, request_id: str) -> list[str]:
        return list(cls.book.get(request_id, ()))


def _page() -> bytes:
    return resources.files(__package__).joinpath("static/status.html").read_bytes()


def status_prefix(path: Any) -> str:
    """Validate a middleware's `status_path` (e.g. "/_lambdify"): where its status endpoints go."""
    if not isinstance(path, str) or not path.startswith("/") or path.rstrip("/") == "":
        raise ValueError(f"status_path must be a path below the root, such as '/_lambdify', got {path!r}")
    return path.rstrip("/")


def below(prefix: str, path: str) -> str | None:
    """The part of `path` below `prefix` ("", "/", "/stats.json"...), or None if it is not there."""
    if path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in ("", "/"):
        return path[len(prefix) :]
    return None


class Status:
    """Serves the status endpoints; with `LAMBDIFY_STATUS_DIR` set, publishes this worker's
    snapshot there and merges the other workers' into what it serves."""

    def __init__(self) -> None:
        LogBook.install()
        folder = os.environ.get(workers.ENV)
        self.publisher = workers.Publisher(folder, self.local) if folder else None

    @staticmethod
    def local() -> dict[str, Any]:
        return snapshot(LogBook.lines)

    def report(self) -> dict[str, Any]:
        """Every worker's `lambdify.stats()`, merged."""
        mine = self.local()
        if self.publisher is None:
            return mine
        return workers.merge([mine, *workers.others(self.publisher.folder)])

    async def startup(self) -> None:
        if self.publisher is not None:
            self.publisher.start()

    async def shutdown(self) -> None:
        if self.publisher is not None:
            await self.publisher.stop()

    async def serve(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """One request for `path`, the part below the status prefix ("", "/", "/stats.json"...)."""
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, scope, 405, b"text/plain", b"Method Not Allowed", [(b"allow", b"GET, HEAD")])
        elif path == "":
            root, path_here = scope.get("root_path", ""), scope["path"]
            # (A mount's `path` holds its `root_path` with Starlette and uvicorn today; not with older servers.)
            location = ((path_here if root and path_here.startswith(root) else root + path_here) + "/").encode()
            await _respond(send, scope, 307, b"text/plain", b"", [(b"location", location)])
        elif path == "/":
            await _respond(send, scope, 200, b"text/html; charset=utf-8", _page())
        elif path == "/stats.json":
            body = json.dumps({"pid": os.getpid(), "functions": self.report()}).encode()
            await _respond(send, scope, 200, b"application/json", body)
        elif path == "/metrics":
            body = prometheus.render(self.report()).encode()
            await _respond(send, scope, 200, prometheus.CONTENT_TYPE.encode(), body)
        else:
            await _respond(send, scope, 404, b"text/plain", b"Not Found")

    def respond_wsgi(self, environ: dict[str, Any], start_response: Any, path: str) -> list[bytes]:
        """`serve` for a WSGI server."""
        method = environ.get("REQUEST_METHOD", "GET")
        extra: list[tuple[str, str]] = []
        if method not in ("GET", "HEAD"):
            status, kind, body, extra = (
                "405 Method Not Allowed",
                "text/plain",
                b"Method Not Allowed",
                [("Allow", "GET, HEAD")],
            )
        elif path == "":
            location = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") + "/"
            status, kind, body, extra = "307 Temporary Redirect", "text/plain", b"", [("Location", location)]
        elif path == "/":
            status, kind, body = "200 OK", "text/html; charset=utf-8", _page()
        elif path == "/stats.json":
            status, kind = "200 OK", "application/json"
            body = json.dumps({"pid": os.getpid(), "functions": self.report()}).encode()
        elif path == "/metrics":
            status, kind, body = "200 OK", prometheus.CONTENT_TYPE, prometheus.render(self.report()).encode()
        else:
            status, kind, body = "404 Not Found", "text/plain", b"Not Found"
        headers = [("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"), *extra]
        start_response(status, headers)
        return [b"" if method == "HEAD" else body]


async def _respond(
    send: Send, scope: Scope, status: int, kind: bytes, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
