"""`FunctionApp`: many functions behind one ASGI app, plus the Lambda Invoke API.

```python
app = FunctionApp([hello, resize])          # GET /hello/..., POST /2015-03-31/functions/hello/invocations
starlette_app.mount("/lambda", app)         # works under a mount prefix too
```
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from ..core.engine import Engine
from .event_queue import EventQueue
from .function_asgi import raw_route_path, run_lifespan, send_json, serve_http
from .invoke_api import PREFIX, serve_invoke
from .status import DEFAULT_PATH, Status

if TYPE_CHECKING:
    from .types import Receive, Scope, Send

__all__ = ["FunctionApp"]


class FunctionApp:
    """An ASGI app serving each function at `/{name}/...` and the Invoke API at `/2015-03-31/...`.

    The function sees the path below its prefix as `rawPath` (`GET /hello/a/b` arrives as
    `/a/b`), as API Gateway strips a custom-domain base path. The Invoke API has no
    authentication: serve it on loopback, or switch it off with `invoke_api=False`.

    `status=True` adds the status page at `/_lambdify/` (with `stats.json` and `metrics`): off
    by default, since it tells anyone who can reach it about the functions and their logs.
    """

    def __init__(
        self,
        functions: Iterable[Any],
        *,
        invoke_api: bool = True,
        max_queued_events: int = 1000,
        status: bool = False,
    ) -> None:
        self.functions: dict[str, Engine] = {}
        for each in functions:
            function = getattr(each, "engine", None)  # (a `Function`: what `@handler` made)
            if not isinstance(function, Engine):
                raise TypeError(f"FunctionApp takes @handler functions, got {each!r}")
            name = function.config.name
            if name in self.functions:
                raise ValueError(f"two functions are named {name!r}; give one a different name=")
            self.functions[name] = function
        if isinstance(max_queued_events, bool) or not isinstance(max_queued_events, int) or max_queued_events < 1:
            raise ValueError(f"max_queued_events must be an integer >= 1, got {max_queued_events!r}")
        if status and DEFAULT_PATH[1:] in self.functions:
            raise ValueError(
                f"a function named {DEFAULT_PATH[1:]!r} would be hidden by the status page at {DEFAULT_PATH}/: "
                "give it a different name=, or turn the status page off"
            )
        self.invoke_api = invoke_api
        self.events = EventQueue(max_queued_events)
        self.status = Status() if status else None

    def __repr__(self) -> str:
        return f"<FunctionApp {', '.join(self.functions)}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._route(scope, receive, send)
        elif kind == "lifespan":
            await run_lifespan(receive, send, self.startup, self.shutdown)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = raw_route_path(scope)
        if (
            self.status is not None
            and path.startswith(DEFAULT_PATH)
            and path[len(DEFAULT_PATH) : len(DEFAULT_PATH) + 1] in ("", "/")
        ):
            await self.status.serve(scope, receive, send, path[len(DEFAULT_PATH) :])
            return
        if path.startswith(PREFIX):
            if self.invoke_api:
                await serve_invoke(self.functions, self.events, scope, receive, send, path[len(PREFIX) :])
                return
        else:
            name, slash, rest = path[1:].partition("/")
            function = self.functions.get(name)
            if function is not None:
                await serve_http(function, scope, receive, send, slash + rest or "/")
                return
        await send_json(send, 404, {"message": "Not Found"}, head=scope["method"] == "HEAD")

    async def startup(self) -> None:
        """Initialise every function's `provisioned` contexts."""
        for function in self.functions.values():
            await function.astart()
        if self.status is not None:
            await self.status.startup()

    async def shutdown(self) -> None:
        """Finish queued Event invocations (within `shutdown_grace`; retries not yet due are given up,
        logged and handed to `on_failure`), then retire every context."""
        grace = max((fn.config.shutdown_grace for fn in self.functions.values()), default=30.0)
        await self.events.drain(grace)
        await asyncio.gather(*(function.ashutdown() for function in self.functions.values()))
        if self.status is not None:
            await self.status.shutdown()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """For a parent app that mounts this one (mounted apps get no lifespan events of their own):

        ```python
        functions = FunctionApp([hello])
        app = Starlette(routes=[Mount("/lambda", functions)], lifespan=functions.lifespan)
        ```
        """
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    def urls(self, base: str) -> dict[str, tuple[str, str]]:
        """Each function's HTTP URL and Invoke API URL under `base` (e.g. `http://127.0.0.1:8080`)."""
        base = base.rstrip("/")
        return {name: (f"{base}/{name}/", f"{base}{PREFIX}{name}/invocations") for name in self.functions}
