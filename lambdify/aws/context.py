"""The LambdaContext an app sees under `lambda_handler`: lambdify's, with AWS's values.

The request id and deadline come from the runtime's context object; the other AWS attributes
(ARN, function name and version, memory, log group and stream, identity, client context,
tenant id) are read from it when asked for, not copied at every invocation.
"""

from __future__ import annotations

import time
from typing import Any, Final

from ..core.context import ExecutionContext
from ..core.current import new_request_id
from ..core.lambda_context import LambdaContext

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

    __slots__ = ("_at", "_aws", "_fallback")

    function_name = _FromAws(_base("function_name"))
    function_version = _FromAws(_base("function_version"))
    invoked_function_arn = _FromAws(_base("invoked_function_arn"))
    memory_limit_in_mb = _FromAws(_base("memory_limit_in_mb"))
    log_group_name = _FromAws(_base("log_group_name"))
    log_stream_name = _FromAws(_base("log_stream_name"))
    identity = _FromAws(_base("identity"))
    client_context = _FromAws(_base("client_context"))
    tenant_id = _FromAws(_base("tenant_id"))

    _at: float | None

    def __init__(self, execution: ExecutionContext, aws: Any, cold_start: bool, timeout: float) -> None:
        self._aws = aws
        self._fallback = time.monotonic() + timeout  # the deadline if AWS's object tells none
        # The request id and the deadline are read from AWS's object when first asked for: most
        # requests never ask, and asking costs a call into the runtime's code.
        LambdaContext.__init__(self, execution, None, None, cold_start)  # type: ignore[arg-type]

    @property
    def aws_request_id(self) -> str:
        request_id = self._request_id
        if request_id is None:
            request_id = getattr(self._aws, "aws_request_id", None)
            if type(request_id) is not str:  # a stand-in without one
                request_id = new_request_id()
            self._request_id = request_id
        return request_id

    @property
    def _deadline(self) -> float:
        at = self._at
        if at is None:
            remaining = getattr(self._aws, "get_remaining_time_in_millis", None)
            at = time.monotonic() + float(remaining()) / 1000 if callable(remaining) else self._fallback
            self._at = at
        return at

    @_deadline.setter
    def _deadline(self, at: float | None) -> None:
        self._at = at
