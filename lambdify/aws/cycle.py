"""One invocation's ASGI plumbing under `lambda_handler`: the request's `receive`/`send`
(`Cycle`), and the flush of deferred work and stray tasks that ends the invocation, in its own task."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..core import background

if TYPE_CHECKING:
    import asyncio

    from ..core.lambda_context import LambdaContext

__all__ = ["Cycle", "awaited", "call_and_flush", "flush"]

_DISCONNECT: Final = {"type": "http.disconnect"}


class Cycle:
    """One request's ASGI `receive`/`send`: the body in one message, the response collected whole
    (Lambda's Python runtime returns whole payloads), then `http.disconnect`."""

    __slots__ = ("body", "chunks", "done", "headers", "loop", "status", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, body: bytes) -> None:
        self.loop = loop
        self.body: bytes | None = body
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.done = False
        self.waiter: asyncio.Future[None] | None = None

    async def receive(self) -> dict[str, Any]:
        body = self.body
        if body is not None:
            self.body = None
            return {"type": "http.request", "body": body, "more_body": False}
        if not self.done:
            waiter = self.waiter
            if waiter is None:
                waiter = self.waiter = self.loop.create_future()
            await waiter
        return _DISCONNECT

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            chunk = message.get("body")
            if chunk:
                self.chunks.append(chunk)
            if not message.get("more_body", False):
                self.end()
        elif kind == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers") or ())

    def end(self) -> None:
        if self.status is not None:
            self.done = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def _inline(call: Callable[[], Any]) -> Any:
    return call()


async def flush(lc: LambdaContext) -> None:
    """Deferred work in order (sync items inline: this thread is the environment's), then stray tasks."""
    await background.flush(lc.execution, lc, _inline)


async def awaited(awaitable: Any) -> Any:
    return await awaitable


async def call_and_flush(on_event: Callable[..., Any], event: Any, lc: LambdaContext) -> Any:
    try:
        return await on_event(event, lc)
    finally:
        await flush(lc)
