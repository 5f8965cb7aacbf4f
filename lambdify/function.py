"""The façade: `@handler` and `Function`, a handler plus its configuration, invoked like a
Lambda function, served over HTTP, or run on AWS Lambda.

`Function` composes the layers below: the engine (`core`), the isolation backend that runs the
context's code (`isolation`), the HTTP surfaces (`http`) and the AWS runtime entry (`aws`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, overload

from .core.config import _NAME_RE, Config, build_config
from .core.current import new_request_id
from .core.engine import Engine
from .core.invoke_sync import invoke
from .core.payload import check_event
from .core.registry import stats as stats

if TYPE_CHECKING:
    from .core.context import ExecutionContext
    from .core.errors import LambdifyError
    from .http.function_wsgi import FunctionWSGI
    from .http.types import ASGIApp

__all__ = ["Function", "handler", "stats"]

F = TypeVar("F", bound=Callable[..., Any])


def _backend(isolation: str) -> Any:
    if isolation == "process":
        from .isolation.process import PROCESS

        return PROCESS
    from .isolation.thread import THREAD

    return THREAD


class Function(Generic[F]):
    """A handler plus its configuration. Made by `@handler`; invoke it like a Lambda function.

    ```python
    @handler(timeout=5)
    def echo(event, context):
        return event

    echo.invoke({"x": 1})          # from sync code
    await echo.ainvoke({"x": 1})   # from async code, on the caller's event loop
    ```
    """

    def __init__(self, func: F, config: Config) -> None:
        #: The engine behind this function (its pools and counters): what lambdify's own HTTP and
        #: AWS layers drive. Not needed by applications.
        self.engine = Engine(func, config, _backend(config.isolation), owner=self)
        self._asgi: ASGIApp | None = None
        self._wsgi: FunctionWSGI | None = None

    def __repr__(self) -> str:
        return f"<Function {self.config.name} timeout={self.config.timeout:g}s isolation={self.config.isolation}>"

    @property
    def config(self) -> Config:
        """The validated options."""
        return self.engine.config

    @config.setter
    def config(self, config: Config) -> None:
        """New options (`fn.config = fn.config.replace(timeout=10)`), for the contexts created from now on."""
        self.engine.config = config
        self.engine.backend = _backend(config.isolation)

    @property
    def name(self) -> str:
        return self.engine.config.name

    @property
    def arn(self) -> str:
        """The ARN this function would have on Lambda."""
        return self.engine.arn

    @property
    def asgi(self) -> ASGIApp:
        """This function as an ASGI app: every request is an invocation (see `event_format`)."""
        if self._asgi is None:
            from .http.function_asgi import FunctionASGI

            self._asgi = FunctionASGI(self.engine)
        return self._asgi

    @property
    def wsgi(self) -> FunctionWSGI:
        """This function as a WSGI app (for gunicorn, uWSGI, waitress...): every request is an invocation."""
        if self._wsgi is None:
            from .http.function_wsgi import FunctionWSGI

            self._wsgi = FunctionWSGI(self.engine)
        return self._wsgi

    def init(self, fn: Callable[[ExecutionContext], Any]) -> Callable[[ExecutionContext], Any]:
        """Set the INIT code with a decorator: `@fn.init def setup(ctx): ...` (sync or async)."""
        self.engine.config = self.engine.config.replace(init=fn)
        return fn

    # -- invoking -------------------------------------------------------------------------

    def invoke(self, event: Any) -> Any:
        """One invocation through the pool (cold or warm); returns after background work has finished.

        Raises `FunctionError` (or a subclass) when the invocation fails, `TooManyRequests` when
        throttled.
        """
        if self.config.isolation != "process":  # (a child's event is checked as it is encoded, once)
            check_event(event)  # TypeError if not JSON, ValueError over Lambda's 6 MB request limit
        return self._invoke(event, new_request_id(), None)

    async def ainvoke(self, event: Any) -> Any:
        """`invoke()` for async callers: runs on the caller's event loop."""
        if self.config.isolation != "process":
            check_event(event)
        self.engine.check_health()
        from .core.invoke_async import run_async

        return await run_async(self.engine, event, new_request_id())

    def __call__(self, event: Any, context: Any) -> Any:
        """The AWS Lambda entry point (`module.fn` as the Lambda handler setting).

        On AWS the invocation runs in this process with AWS's context; elsewhere it behaves like
        `invoke()` with the given context's request id and deadline.
        """
        if os.environ.get("AWS_LAMBDA_RUNTIME_API"):
            from .aws.runtime import run_on_aws

            return run_on_aws(self.engine, event, context)
        if self.config.isolation != "process":
            check_event(event)
        request_id = getattr(context, "aws_request_id", None) or new_request_id()
        deadline = None
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if callable(remaining):
            deadline = time.monotonic() + remaining() / 1000
        return self._invoke(event, request_id, deadline)

    def _invoke(self, event: Any, request_id: str, deadline: float | None) -> Any:
        return invoke(self.engine, event, request_id, deadline)

    # -- lifecycle and statistics ---------------------------------------------------------

    def start(self) -> None:
        """Initialise the `provisioned` contexts now (servers call this at startup)."""
        self.engine.start()

    async def astart(self) -> None:
        """`start()` on the caller's event loop."""
        await self.engine.astart()

    def shutdown(self) -> None:
        """Retire every context, after in-flight invocations and their background work have finished."""
        self.engine.shutdown()

    async def ashutdown(self) -> None:
        """`shutdown()` for async callers."""
        await self.engine.ashutdown()

    def stats(self) -> dict[str, Any]:
        """Counters since the function was created (per worker process)."""
        return self.engine.stats()


_IDENTITY: Final = ("__module__", "__name__", "__qualname__", "__doc__")


def _copy_identity(function: Function[Any], target: Any) -> None:
    """Give a decorated function its handler's name, docstring and `__wrapped__`, and nothing else.

    Not `functools.update_wrapper`: it also copies the target's `__dict__` over the Function's own
    attributes (a Flask app's `config` would replace ours).
    """
    for attr in _IDENTITY:
        value = getattr(target, attr, None)
        if isinstance(value, str):
            setattr(function, attr, value)
    function.__wrapped__ = target  # type: ignore[attr-defined]


@overload
def handler(func: F, /) -> Function[F]: ...


@overload
def handler(
    func: None = None,
    /,
    *,
    name: str | None = None,
    timeout: float = ...,
    memory_mb: int | None = ...,
    tmp_mb: int = ...,
    init: Callable[[ExecutionContext], Any] | None = ...,
    init_timeout: float = ...,
    idle_ttl: float = ...,
    concurrency: int | None = ...,
    max_contexts: int | None = ...,
    queue_timeout: float = ...,
    provisioned: int = ...,
    isolation: str = ...,
    event_format: str = ...,
    max_abandoned_threads: int = ...,
    shutdown_grace: float = ...,
    stray_tasks: str = ...,
    max_retry_attempts: int = ...,
    retry_delay: float = ...,
    max_event_age: float = ...,
    on_failure: Callable[[Any, LambdifyError], Any] | None = ...,
) -> Callable[[F], Function[F]]: ...


def handler(func: F | None = None, /, **options: Any) -> Function[F] | Callable[[F], Function[F]]:
    """Turn a handler function (sync or async) or a class into a `Function`.

    ```python
    @handler
    def echo(event, context):
        return event

    @handler(timeout=5, memory_mb=256, init=setup)
    async def fetch(event, context): ...

    @handler(timeout=10)
    class Classifier:
        def __init__(self, ctx): self.model = load()      # INIT
        def __call__(self, event, context): return self.model(event)
        def close(self): ...                              # SHUTDOWN
    ```
    Options are validated here, so a bad value fails at import time.
    """

    def decorate(target: F) -> Function[F]:
        if not callable(target):
            raise TypeError(f"@handler needs a function or a class, got {target!r}")
        name = options.get("name") or getattr(target, "__name__", None) or type(target).__name__
        if not options.get("name") and not _NAME_RE.fullmatch(name):
            raise ValueError(
                f"{target!r} has no usable name ({name!r} is not a Lambda function name): pass name=, "
                "as in handler(name='my-function')(fn) or @handler(name='my-function')"
            )
        config = build_config(name, {**options, "name": name})
        function = Function(target, config)
        _copy_identity(function, target)
        if function.engine.is_class and not any("__call__" in vars(k) for k in target.__mro__[:-1]):  # type: ignore[attr-defined]
            raise TypeError(f"class {target.__name__} needs a __call__(self, event, context) method")
        if function.config.concurrency != 1 and function.config.isolation == "process":
            raise ValueError(
                f"concurrency={function.config.concurrency} with isolation='process': a child process runs one "
                "invocation at a time (use max_contexts to run more at once)"
            )
        if function.config.concurrency != 1 and not function.engine.is_async:
            raise ValueError(
                f"concurrency={function.config.concurrency} needs an async handler: a sync handler runs on its "
                "context's one thread, one invocation at a time (use max_contexts to run more at once)"
            )
        return function

    if func is not None:
        if options:
            raise TypeError("use @handler or @handler(**options), not both")
        return decorate(func)
    return decorate
