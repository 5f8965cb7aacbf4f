"""Running on real AWS Lambda: the process is the execution context.

Lambda already enforces the deadline and memory, prints START/END/REPORT, and freezes the
environment between invocations. What lambdify adds there: INIT once (at the first call),
resources, the scratch directory, and the flush of deferred work before the handler returns
(work left running after the return would be frozen mid-way). A sync handler runs with no
event loop, so `asyncio` is not even imported.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from ..core.background import flush_here
from ..core.context import ExecutionContext
from ..core.current import _current
from ..core.lambda_context import LambdaContext

if TYPE_CHECKING:
    from ..core.engine import Engine

_contexts: dict[int, ExecutionContext] = {}


def _context_for(function: Engine) -> tuple[ExecutionContext, bool]:
    ctx = _contexts.get(id(function))
    if ctx is not None:
        return ctx, False
    ctx = ExecutionContext(function, None)
    started = time.perf_counter()
    ctx.init_here()
    ctx.init_ms = (time.perf_counter() - started) * 1000
    function.cold_started(ctx.init_ms)
    _contexts[id(function)] = ctx
    return ctx, True


_FROM_AWS: Final = (
    "function_name",
    "function_version",
    "invoked_function_arn",
    "memory_limit_in_mb",
    "log_group_name",
    "log_stream_name",
    "identity",
    "client_context",
    "tenant_id",
)
_MISSING: Final = object()


class _AwsLambdaContext(LambdaContext):
    """On AWS, the attributes that lambdify derives from the function hold the runtime's values."""

    __slots__ = _FROM_AWS[:6]  # (identity, client_context, tenant_id go to the instance's __dict__)


def run_on_aws(function: Engine, event: Any, aws_context: Any) -> Any:
    """One invocation inside the Lambda runtime, in this thread, with AWS's context."""
    ctx, cold = _context_for(function)
    remaining = aws_context.get_remaining_time_in_millis() / 1000
    lc = _AwsLambdaContext(ctx, aws_context.aws_request_id, time.monotonic() + remaining, cold)
    for attribute in _FROM_AWS:
        value = getattr(aws_context, attribute, _MISSING)
        setattr(lc, attribute, getattr(super(_AwsLambdaContext, lc), attribute) if value is _MISSING else value)
    ctx._serial += 1
    ctx.invocations += 1
    token = _current.set(lc)
    error: BaseException | None = None
    try:
        try:
            return ctx.settle(ctx._target(event, lc))
        except BaseException as exc:
            error = exc
            raise
        finally:
            flush_here(ctx, lc)
            function.invoked(cold, error, None)
    finally:
        _current.reset(token)
