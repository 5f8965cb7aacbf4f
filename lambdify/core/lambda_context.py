"""The per-invocation `LambdaContext`: AWS's context object, plus lambdify's extras.

Besides what handlers read, it carries the invocation's state that the engine's drivers share
(`invocation`, `invoke_sync`/`invoke_async`, `background`, the HTTP surfaces): its deadline
(`_deadline`, monotonic seconds), the deferred work (`_deferred`) and stray tasks (`_tasks`)
still to flush, whether the invocation has completed (`_done`), the captured Tail log (`_log`),
and the coroutine sending the end of its response (`_sending`). These are the engine's
internal interface, read and written by those modules only; nothing outside lambdify uses them.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from .current import current_context, new_request_id
from .resources import Resources, _is_awaitable

if TYPE_CHECKING:
    import asyncio
    from pathlib import Path

    from .context import ExecutionContext

__all__ = ["LambdaContext", "current_context"]


class LambdaContext:
    """The `context` argument of a handler: AWS's context object, plus lambdify's extras.

    ```python
    def handler(event, context):
        context.get_remaining_time_in_millis()
        db = context.resources["db"]
        context.defer(send_metrics, event)
    ```
    """

    __slots__ = (
        "__dict__",  # made only if something sets an attribute that has a default below
        "_deadline",
        "_deferred",
        "_done",
        "_log",
        "_request_id",
        "_sending",
        "_tasks",
        "cold_start",
        "execution",
    )

    function_version = "$LATEST"
    identity: Any = None
    client_context: Any = None
    tenant_id: str | None = None

    def __init__(self, execution: ExecutionContext, request_id: str | None, deadline: float, cold_start: bool) -> None:
        self.execution = execution
        self._request_id = request_id  # None: made on first use (a wrapped app may never ask)
        self.cold_start = cold_start
        self._deadline = deadline
        self._deferred: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] | None = None  # made by defer()
        self._tasks: set[asyncio.Task[Any]] | None = None
        self._log: list[str] | None = None  # captured for the Invoke API's Tail logs
        self._done = False
        # The coroutine that ends the response (the server's `send` runs in it): a task started
        # while it runs (hypercorn's keep-alive timer) is the connection's, not the invocation's.
        self._sending: Any = None

    # What does not change between invocations is read from the execution context when asked
    # for, rather than copied into every invocation's context.

    @property
    def aws_request_id(self) -> str:
        request_id = self._request_id
        if request_id is None:
            request_id = self._request_id = new_request_id()
        return request_id

    @property
    def function_name(self) -> str:
        return self.execution.function_name

    @property
    def invoked_function_arn(self) -> str:
        return self.execution._function.arn

    @property
    def memory_limit_in_mb(self) -> int:
        return self.execution._function.config.memory_size

    @property
    def log_group_name(self) -> str:
        return self.execution._function.log_group_name

    @property
    def log_stream_name(self) -> str:
        return self.execution.log_stream_name

    def __repr__(self) -> str:
        return f"<LambdaContext {self.function_name} {self.aws_request_id}>"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation's deadline (never below 0)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def log(self, msg: Any) -> None:
        """Write `msg` to the function's log (standard output, as on Lambda), as one line: on Lambda
        each call is one log event, never run into the next line (END, say) as a partial line would."""
        text = str(msg)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")

    @property
    def resources(self) -> Resources:
        """Shortcut for `context.execution.resources`."""
        return self.execution.resources

    @property
    def tmp(self) -> Path:
        """Shortcut for `context.execution.tmp`."""
        return self.execution.tmp

    def defer(self, fn_or_awaitable: Any, *args: Any, **kwargs: Any) -> None:
        """Run work after the handler returns, before the invocation completes (like `waitUntil`).

        ```python
        context.defer(send_email, to, body)    # sync: runs off the event loop
        context.defer(client.post(url, json=x)) # an awaitable
        ```
        Items run one after another, in order, within the invocation's deadline; a failure is
        logged and counted, never raised to the caller.
        """
        if self._done:
            raise RuntimeError(f"defer() called after invocation {self.aws_request_id} had completed")
        if _is_awaitable(fn_or_awaitable):
            if args or kwargs:
                raise TypeError("defer(awaitable) takes no arguments; pass a callable to give arguments")
        elif not callable(fn_or_awaitable):
            raise TypeError(f"defer() needs a callable or an awaitable, got {fn_or_awaitable!r}")
        if self._deferred is None:
            self._deferred = []
        self._deferred.append((fn_or_awaitable, args, kwargs))
