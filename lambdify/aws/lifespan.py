"""The ASGI lifespan protocol, run once per execution environment on `lambda_handler`'s loop.

`startup()` sends `lifespan.startup` and runs the loop until the app answers; the app's lifespan
coroutine then stays parked on that loop (it runs whenever an invocation runs the loop) until
`shutdown()` sends `lifespan.shutdown`. As uvicorn's `lifespan="auto"`: an app that raises before
answering the startup does not speak lifespan, and is served without it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..core.errors import InitError
from ..core.logs import logger

if TYPE_CHECKING:
    from ..http.types import ASGIApp, Message

__all__ = ["Lifespan"]


class Lifespan:
    """One app's lifespan on one event loop. `state` is the lifespan state (copied into each request's scope)."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.state: dict[str, Any] = {}
        self.supported = False
        self._task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[Message] | None = None
        self._stopped: asyncio.Future[Message] | None = None
        self._stop: asyncio.Future[None] | None = None
        self._sent_startup = False

    def startup(self) -> None:
        """Run the app's startup; `InitError` if it reports `lifespan.startup.failed`."""
        loop = self.loop
        self._started, self._stopped, self._stop = loop.create_future(), loop.create_future(), loop.create_future()
        self._task = loop.create_task(self._main(), name="lambdify lifespan")
        message = loop.run_until_complete(self._started)
        if message["type"] == "lifespan.startup.failed":
            raise InitError(f"the app's lifespan startup failed: {message.get('message', '')}")
        self.supported = message["type"] == "lifespan.startup.complete"

    def shutdown(self, timeout: float) -> None:
        """Run the app's shutdown (at most `timeout` seconds), then end its lifespan coroutine."""
        task = self._task
        if task is None or task.done() or self._stop is None or self._stopped is None:
            return
        self._stop.set_result(None)
        try:
            message = self.loop.run_until_complete(asyncio.wait_for(asyncio.shield(self._stopped), timeout))
        except TimeoutError:
            logger.error("the app's lifespan shutdown did not end within %g s", timeout)
        else:
            if message["type"] == "lifespan.shutdown.failed":
                logger.error("the app's lifespan shutdown failed: %s", message.get("message", ""))
        if not task.done():
            task.cancel()
            self.loop.run_until_complete(asyncio.wait([task]))

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        assert self._started is not None and self._stopped is not None
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if not self._started.done():  # (an app without lifespan support: served without it)
                logger.debug("the app does not run ASGI lifespan (%s: %s); serving without it", type(exc).__name__, exc)
                self._started.set_result({"type": "lifespan.unsupported"})
            elif not self._stopped.done():
                logger.error("the app's lifespan raised", exc_info=True)
            if not isinstance(exc, Exception):
                raise
        finally:
            if not self._started.done():
                self._started.set_result({"type": "lifespan.unsupported"})
            if not self._stopped.done():
                self._stopped.set_result({"type": "lifespan.shutdown.complete"})

    async def _receive(self) -> Message:
        if not self._sent_startup:
            self._sent_startup = True
            return {"type": "lifespan.startup"}
        assert self._stop is not None
        await self._stop
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind.startswith("lifespan.startup.") and self._started is not None and not self._started.done():
            self._started.set_result(message)
        elif kind.startswith("lifespan.shutdown.") and self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(message)
