"""`lambdify emulate -- COMMAND...`: a local Lambda for any runtime.

Each COMMAND process is one execution context of the function's pool (`emulated_context.py`),
fed through the Lambda Runtime API (`runtime_api.py`). The engine, its pool and the HTTP
surfaces in front (the Invoke API, HTTP events) are lambdify's own; only where the handler runs
differs, as with process isolation: this backend's driver hands the event to the process's
pending `invocation/next` and waits for `response` or `error`, with the deadline.

```python
function = emulated_function(["python", "-m", "awslambdaric", "fn.handler"], name="fn", timeout=3)
app = FunctionApp([function])       # POST /2015-03-31/functions/fn/invocations, GET /fn/...
```
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..core import hooks
from ..core.config import build_config
from ..core.context import ExecutionContext
from ..core.engine import Engine
from ..core.errors import FunctionError, MemoryLimitExceeded
from ..core.invocation import Reported, _Invocation, _TimedOut
from ..core.invoke_async import _answer as answer_caller
from ..isolation.process import event_json
from ..isolation.template import describe_exit
from ..isolation.thread import Worker
from .emulated_context import EmulatedContext, Exited, kill_all
from .runtime_api import Next, error_from_body

if TYPE_CHECKING:
    from ..core.invocation import Ready

__all__ = ["EMULATED", "EmulatedFunction", "emulated_function"]

DEFAULT_MAX_CONTEXTS: Final = 4


class EmulatedRuntime:
    """The "handler" of an emulated function: the command line of its runtime."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)

    def __repr__(self) -> str:
        return f"<runtime {' '.join(self.command)!r}>"

    def __call__(self, event: Any, context: Any) -> Any:
        raise TypeError("an emulated function runs in its runtime processes: invoke it through its Invoke API")


class EmulatedFunction:
    """What `FunctionApp` serves for `lambdify emulate`: a name and its engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = self.__qualname__ = engine.config.name

    def __repr__(self) -> str:
        return f"<EmulatedFunction {self.name} {self.engine.func!r}>"

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()


def emulated_function(
    command: Sequence[str],
    *,
    name: str = "function",
    timeout: float = 3.0,
    memory_mb: int | None = None,
    max_contexts: int = DEFAULT_MAX_CONTEXTS,
    idle_ttl: float = 600.0,
    shutdown_grace: float = 30.0,
) -> EmulatedFunction:
    """A function whose execution contexts are processes running `command` (a Lambda runtime)."""
    if not command:
        raise ValueError("lambdify emulate needs a COMMAND to run as the runtime (after --)")
    options = {
        "timeout": timeout,
        "memory_mb": memory_mb,
        "max_contexts": max_contexts,
        "idle_ttl": idle_ttl,
        "shutdown_grace": shutdown_grace,
        "isolation": "process",  # (a context is a process: idle ones are frozen, memory is theirs)
    }
    engine = Engine(EmulatedRuntime(command), build_config(name, options), EMULATED)
    function = EmulatedFunction(engine)
    engine.owner = function
    return function


def _next(function: Engine, invocation: _Invocation, body: bytes) -> Next:
    lc = invocation.lc
    now = time.time()
    deadline_ms = int((now + invocation.remaining()) * 1000)
    trace = f"Root=1-{int(now):08x}-{os.urandom(12).hex()};Parent={os.urandom(8).hex()};Sampled=0"
    headers = {
        "Lambda-Runtime-Aws-Request-Id": lc.aws_request_id,
        "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
        "Lambda-Runtime-Invoked-Function-Arn": function.arn,
        "Lambda-Runtime-Trace-Id": trace,
    }
    return Next(lc.aws_request_id, headers, body)


def _result(body: bytes) -> Any:
    """The runtime's response as the caller gets it: decoded JSON, or the bytes as they came."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body


async def run_async(
    function: Engine,
    event: Any,
    request_id: str,
    deadline: float | None = None,
    *,
    on_ready: Ready | None = None,
    log: list[str] | None = None,
    on_start: Any = None,
) -> Any:
    """One invocation on a runtime process: the event to its `next`, its answer back."""
    body = event_json(event).encode()
    pool = function.pool(asyncio.get_running_loop())
    while True:
        ctx, cold = pool.take(), False
        if ctx is None:
            ctx, cold = await pool.aacquire(request_id)
        assert isinstance(ctx, EmulatedContext)
        if not ctx.dead:
            break
        pool.release(ctx, "its process exited while idle")  # (then a warm one, or a new one)
    invocation = _Invocation(function, ctx, request_id, cold, deadline, log)
    invocation.peak_before = math.inf  # (memory is the runtime process's, measured there)
    invocation.ceiling = None
    invocation.marshal = False  # (the runtime sent JSON)
    if on_start is not None:
        on_start(invocation.lc._deadline)
    ctx.thaw()
    ctx.log = invocation.lc._log
    ctx.invocations += 1
    result: Any = None
    error: BaseException | None = None
    decided = False
    try:
        try:
            async with asyncio.timeout(invocation.remaining()):
                kind, answer, headers = await ctx.invoke(_next(function, invocation, body))
        except TimeoutError:
            ctx.kill()  # (Lambda stops the whole environment at the deadline; the next call re-INITs)
            error = _TimedOut()
        except Exited:
            error = Reported(FunctionError("Runtime.ExitError", describe_exit(ctx.status), [], request_id))
        else:
            if kind == "response":
                result = _result(answer)
            else:
                error = Reported(error_from_body(answer, headers, request_id))
        invocation.max_memory = ctx.peak_mb = ctx.measure_peak()
        limit = function.config.memory_mb
        if limit is not None and ctx.peak_mb is not None and ctx.peak_mb > limit and not isinstance(error, _TimedOut):
            ctx.kill()
            message = f"Runtime exited with error: out of memory (peak {ctx.peak_mb:.0f} MB, memory_mb={limit})"
            result, error = None, Reported(MemoryLimitExceeded(message, request_id))
        if on_ready is not None and not isinstance(error, _TimedOut):
            failure = invocation.outcome(result, error)
            decided = True
            await answer_caller(on_ready, invocation.result, failure)
    except BaseException:
        ctx.kill()  # the caller was cancelled mid-invocation: the runtime's state is unknown
        ctx.log = None
        pool.release(ctx, "its caller was cancelled")
        raise
    ctx.log = None
    return invocation.finish(pool, result, error, decided=decided)


def run_sync(function: Engine, event: Any, request_id: str, deadline: float | None = None) -> Any:
    raise TypeError(f"{function.config.name} runs in emulated runtime processes: invoke it through its Invoke API")


class _EmulatedBackend:
    """Each context is a runtime process; invocations go through its Runtime API."""

    name = "emulate"
    context_class: type[ExecutionContext] = EmulatedContext
    run_sync: Callable[..., Any] | None = staticmethod(run_sync)
    run_async: Callable[..., Awaitable[Any]] | None = staticmethod(run_async)

    @staticmethod
    def worker(name: str) -> Worker:
        return Worker(name)

    @staticmethod
    def main_thread_worker() -> Any:
        raise ValueError("an emulated function runs in its runtime processes, not on the main thread")

    @staticmethod
    def check(engine: Engine) -> None:
        pass


EMULATED: Final = _EmulatedBackend()

hooks.at_exit(kill_all)
