"""The LambdaContext an app sees under `lambda_handler`: lambdify's, with AWS's values.

The request id and deadline come from the runtime's context object; the other AWS attributes
(ARN, function name and version, memory, log group and stream, identity, client context,
tenant id) are read from it when asked for, not copied at every invocation.
"""

from __future__ import annotations

import time
from typing import Any, Final

from ..core.context import ExecutionContext, LambdaContext

__all__ = ["AwsLambdaContext"]

_MISSING: Final = object()


class _FromAws:
    """An attribute read from AWS's context object, or lambdify's own value when it has none."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, lc: Any, owner: type | None = None) -> Any:
        if lc is None:
            return self
        value = getattr(lc._aws, self.name, _MISSING)
        if value is not _MISSING:
            return value
        fallback = self.fallback
        return fallback.__get__(lc, owner) if hasattr(fallback, "__get__") else fallback


def _base(name: str) -> Any:
    return LambdaContext.__dict__[name]


class AwsLambdaContext(LambdaContext):
    """`context` for an app under `lambda_handler`: lambdify's extras, AWS's request id, ARN and deadline."""

    __slots__ = ("_aws",)

    function_name = _FromAws(_base("function_name"))
    function_version = _FromAws(_base("function_version"))
    invoked_function_arn = _FromAws(_base("invoked_function_arn"))
    memory_limit_in_mb = _FromAws(_base("memory_limit_in_mb"))
    log_group_name = _FromAws(_base("log_group_name"))
    log_stream_name = _FromAws(_base("log_stream_name"))
    identity = _FromAws(_base("identity"))
    client_context = _FromAws(_base("client_context"))
    tenant_id = _FromAws(_base("tenant_id"))

    def __init__(self, execution: ExecutionContext, aws: Any, cold_start: bool, timeout: float) -> None:
        request_id = getattr(aws, "aws_request_id", None)
        remaining = getattr(aws, "get_remaining_time_in_millis", None)
        now = time.monotonic()
        deadline = now + (remaining() / 1000 if callable(remaining) else timeout)
        LambdaContext.__init__(
            self, execution, request_id if isinstance(request_id, str) else None, deadline, cold_start
        )
        self._aws = aws
