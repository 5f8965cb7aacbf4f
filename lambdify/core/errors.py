"""Every error lambdify raises.

```
LambdifyError
├── FunctionError(error_type, error_message, stack_trace, request_id)
│   ├── InvocationTimeout      "Sandbox.Timedout"
│   ├── MemoryLimitExceeded    "Runtime.OutOfMemory"
│   └── InitError              "Runtime.InitError"
└── TooManyRequests            throttled (not a FunctionError)
```

Errors cross process boundaries (process isolation, the Invoke API), so each one survives a
pickle round trip, and `FunctionError.to_payload()` gives Lambda's wire format.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FunctionError",
    "InitError",
    "InvocationTimeout",
    "LambdifyError",
    "MemoryLimitExceeded",
    "TooManyRequests",
]


def _package_dir() -> str:
    """The real directory of the lambdify package, ending with a separator."""
    import os
    import sys

    package = sys.modules[__name__.partition(".")[0]]
    return os.path.join(os.path.dirname(os.path.realpath(package.__file__ or __file__)), "")


def stack_trace(exc: BaseException) -> list[str]:
    """A traceback as Lambda's Python runtime lists it, without lambdify's own frames.

    lambdify's frames are those of files inside the package's own directory (a user's project in
    a folder that happens to be called `lambdify`, such as a clone of this repository, keeps its frames).
    """
    import os
    import traceback

    ours = _package_dir()
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not os.path.realpath(frame.filename).startswith(ours)
    ]
    return traceback.format_list(frames)


def _restore(cls: type[FunctionError], state: dict[str, Any]) -> FunctionError:
    error = cls.__new__(cls)
    Exception.__init__(error, state["error_message"])
    error.__dict__.update(state)
    return error


class LambdifyError(Exception):
    """Base class of every lambdify error."""


class FunctionError(LambdifyError):
    """An invocation failed: the handler raised, timed out, ran out of memory, or could not start.

    `error_type` is the exception's class name for handler errors, or a Lambda runtime type
    such as `"Runtime.MarshalError"` or `"Runtime.ExitError"`.
    """

    def __init__(
        self,
        error_type: str,
        error_message: str,
        stack_trace: list[str] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(error_message)
        self.error_type = error_type
        self.error_message = error_message
        self.stack_trace = list(stack_trace or ())
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.error_type}: {self.error_message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), dict(self.__dict__))

    def to_payload(self) -> dict[str, Any]:
        """The error as Lambda's Python runtime puts it on the wire."""
        return {
            "errorMessage": self.error_message,
            "errorType": self.error_type,
            "requestId": self.request_id or "",
            "stackTrace": self.stack_trace,
        }


class InvocationTimeout(FunctionError, TimeoutError):
    """The handler and its deferred work did not finish before the deadline."""

    def __init__(self, timeout: float, request_id: str | None = None) -> None:
        super().__init__("Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds", None, request_id)


class MemoryLimitExceeded(FunctionError):
    """The invocation pushed memory past the function's `memory_mb` ceiling."""

    def __init__(self, error_message: str, request_id: str | None = None) -> None:
        super().__init__("Runtime.OutOfMemory", error_message, None, request_id)


class InitError(FunctionError):
    """The INIT phase raised or passed `init_timeout`; the execution context was discarded."""

    def __init__(self, error_message: str, stack_trace: list[str] | None = None, request_id: str | None = None) -> None:
        super().__init__("Runtime.InitError", error_message, stack_trace, request_id)


class TooManyRequests(LambdifyError):
    """Every execution context was busy for `queue_timeout` seconds: the invocation was throttled."""


class ThreadStartError(RuntimeError):
    """The OS could not start a thread (usually: memory is at its limit). Internal: INIT maps it to `InitError`."""


def failure_counter(failure: BaseException, status: str | None) -> str:
    """The `fn.stats()` counter a failed invocation adds to: "timeouts", "oom" or "errors"."""
    if status == "timeout":
        return "timeouts"
    return "oom" if isinstance(failure, MemoryLimitExceeded) else "errors"
