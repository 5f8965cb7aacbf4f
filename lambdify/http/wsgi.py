"""WSGI plumbing shared by `fn.wsgi` (function_wsgi.py) and `WSGIMiddleware` (wsgi_middleware.py):
reading a request, refusing one, and the response bodies that end an invocation when they are
exhausted or closed, whichever comes first (or, with a warning, when garbage-collected)."""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

from ..core.errors import LambdifyError, TooManyRequests
from ..core.invoke_sync import SyncRun
from ..core.logs import logger

if TYPE_CHECKING:
    from ..core.context import ExecutionContext

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


_EMPTY: Final[Iterator[bytes]] = iter(())


class _Body:
    """A response body that ends its invocation when it is exhausted or closed, whichever comes first.

    WSGI servers close a body after sending it; test clients often only read it to the end
    (Flask's `test_client()` without `with`). A body neither exhausted nor closed ends its
    invocation when it is garbage-collected (with a warning line), or at interpreter exit.
    """

    __slots__ = ("__weakref__", "_ended", "_late")

    def __init__(self, ctx: ExecutionContext) -> None:
        self._ended = False
        # What the app's body raised in its close() after it was read to the end: raised by our
        # close(), which the server calls once it has sent the response, as it would have seen it.
        self._late: Exception | None = None
        ctx.holder = weakref.ref(self)  # (for the exit hook: see end_at_exit)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        self._end_once()
        late, self._late = self._late, None
        if late is not None:
            raise late

    def _end_once(self) -> None:
        if not self._ended:
            self._ended = True
            self._end()

    def _end(self) -> None:
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError

    def _release(self, why: str) -> None:
        """End an abandoned body's invocation, never raising (from `__del__` and at exit)."""
        logger.warning("%s: %s; its invocation ends now", self._describe(), why)
        try:
            self.close()
        except BaseException as exc:  # noqa: B036 - nobody is left to raise it to
            logger.error("%s: ending its invocation failed: %r", self._describe(), exc)

    def end_at_exit(self) -> None:
        """The interpreter exits with this body still open (called by lambdify's exit hook)."""
        if not self._ended:
            self._release("response body still open at exit")

    def __del__(self) -> None:
        if not getattr(self, "_ended", True):
            self._release("response body garbage-collected without being read to the end or closed")


def _refuse(start_response: StartResponse, exc: LambdifyError, request_id: str) -> list[bytes]:
    """Answer a request that got no context: throttled (429), or its INIT failed (502)."""
    if isinstance(exc, TooManyRequests):
        return json_response(start_response, 429, "Too Many Requests", request_id)
    logger.error("RequestId: %s INIT failed: %s", request_id, exc)
    return json_response(start_response, 502, "Internal Server Error", request_id)


class _Flushing(_Body):
    """A collected response whose end waits for the invocation's flush on its context's thread."""

    __slots__ = ("_chunks", "_run")

    def __init__(self, chunks: list[bytes], run: SyncRun, late: Exception | None = None) -> None:
        self._chunks = chunks
        self._run = run
        super().__init__(run.ctx)
        self._late = late

    def __iter__(self) -> Iterator[bytes]:
        # A generator, not a `__next__` of ours: the chunks are stepped through in C, and reading
        # past the last one ends the invocation.
        yield from self._chunks
        self._end_once()  # (not close(): what the app's close() raised waits for the server's)

    def _end(self) -> None:
        error = self._run.settle()
        if error is not None:
            logger.debug("RequestId: %s failed after its response was sent: %s", self._run.lc.aws_request_id, error)

    def _describe(self) -> str:
        return f"RequestId: {self._run.lc.aws_request_id}"
