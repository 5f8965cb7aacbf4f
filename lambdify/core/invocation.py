"""One invocation's bookkeeping (`_Invocation`): its LambdaContext, its outcome, the limits
checked at its end, its START/END/REPORT lines, and the context given back to the pool.

The drivers that run an invocation are `invoke_sync` (the handler on the context's thread) and
`invoke_async` (the handler in the caller's task, on its event loop).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self

from . import logs
from . import marshal as _json
from .background import drop_deferred
from .current import _current
from .errors import FunctionError, InvocationTimeout, MemoryLimitExceeded, failure_counter, stack_trace
from .lambda_context import LambdaContext
from .memory import current_rss_mb, peak_rss_mb
from .payload import MAX_RESPONSE, ensure_json, too_large
from .restart import request_restart
from .scratch import over_quota

if TYPE_CHECKING:
    from .context import ExecutionContext
    from .engine import Engine
    from .pool import Pool


class _TimedOut(Exception):
    """Marks an invocation that passed its deadline."""


class Reported(Exception):
    """A failure already mapped to its FunctionError (e.g. by a child process)."""

    def __init__(self, failure: FunctionError) -> None:
        super().__init__(failure)
        self.failure = failure


Ready = Callable[[Any, "FunctionError | None"], Awaitable[None]]


class _Invocation:
    """The bookkeeping of one invocation: its LambdaContext, its outcome, and what ends it."""

    __slots__ = (
        "ceiling",
        "cold",
        "ctx",
        "escaped",
        "failure",
        "function",
        "lc",
        "logging",
        "marshal",
        "max_memory",
        "peak_before",
        "result",
        "retire",
        "started",
        "status",
        "timeout",
    )

    #: The class of its LambdaContext (a surface may add its own state to it).
    context_class: type[LambdaContext] = LambdaContext

    def __init__(
        self,
        function: Engine,
        ctx: ExecutionContext,
        request_id: str | None,
        cold: bool,
        deadline: float | None,
        log: list[str] | None = None,
    ) -> None:
        config = function.config
        # The one clock read of an invocation's start: its deadline, its REPORT duration, its stats.
        now = time.monotonic()
        timeout = config.timeout if deadline is None else max(0.0, deadline - now)
        lc = self.context_class(ctx, request_id, now + timeout if deadline is None else deadline, cold)
        self._adopt(function, lc, now, timeout)
        self.peak_before = peak_rss_mb() if self.ceiling is not None else 0.0
        # START/END/REPORT cost a clock and a request id only when someone reads them. (The
        # logger's own check, without the call through logs.enabled(), once it exists.)
        real = logs._LazyLogger._real
        self.logging = logging = logs.enabled() if real is None else real.isEnabledFor(logs.INFO)
        if logging or log is not None:
            if log is not None:
                lc._log = log
                log.append(logs.start_line(lc.aws_request_id) + "\n")
            if logging:
                logs.log_start(lc.aws_request_id)

    @classmethod
    def around(cls, function: Engine, lc: LambdaContext, started: float) -> Self:
        """The bookkeeping of an invocation that began without it (a middleware's fast path, which
        takes it only for functions without a memory ceiling and while START lines are off), to end it."""
        self = cls.__new__(cls)
        self._adopt(function, lc, started, function.config.timeout)
        self.peak_before = 0.0
        self.logging = False
        return self

    def _adopt(self, function: Engine, lc: LambdaContext, started: float, timeout: float) -> None:
        self.started = started
        self.timeout = timeout
        self.function = function
        self.ctx = lc.execution
        self.cold = lc.cold_start
        self.lc = lc
        self.result: Any = None
        self.failure: FunctionError | None = None
        self.escaped: BaseException | None = None  # a KeyboardInterrupt, SystemExit...: passed on as is
        self.retire: str | None = None
        self.status: str | None = None
        self.marshal = True  # Lambda returns JSON; a wrapped web app's response is not
        self.max_memory: float | None = None  # measured elsewhere (a child process), for REPORT
        self.ceiling = function.config.memory_mb

    def remaining(self) -> float:
        return self.lc._deadline - time.monotonic()

    def outcome(self, result: Any, error: BaseException | None) -> FunctionError | None:
        """What the caller gets, decided once the handler is done (before the flush, for HTTP surfaces)."""
        failure: FunctionError | None = None
        if error is None:
            if self.marshal and result is not None and not isinstance(result, bytes):  # bytes: sent as they are
                try:
                    size = ensure_json(result)
                    if size > MAX_RESPONSE:
                        size = len(_json.marshal(result))
                except (TypeError, ValueError) as exc:
                    message = f"Unable to marshal response: {exc}"
                    failure = FunctionError("Runtime.MarshalError", message, [], self.lc.aws_request_id)
                    logs.log_error(failure, self.lc._log)
                else:
                    if size > MAX_RESPONSE:
                        message = too_large(size)
                        failure = FunctionError("Function.ResponseSizeTooLarge", message, [], self.lc.aws_request_id)
                        logs.log_error(failure, self.lc._log)
        elif isinstance(error, _TimedOut):
            failure = InvocationTimeout(self.timeout, self.lc.aws_request_id)
            self.retire, self.status = "timed out", "timeout"
            logs.log_timeout(failure, self.lc._log)
        elif isinstance(error, Reported):
            failure = error.failure
            if isinstance(failure, MemoryLimitExceeded):
                self.retire = "out of memory"
            elif failure.error_type == "Runtime.ExitError":
                self.retire = "its process exited"
        elif isinstance(error, MemoryError):
            failure, self.retire = self._out_of_memory("an allocation failed (MemoryError)"), "out of memory"
        else:
            failure = FunctionError(type(error).__name__, str(error), stack_trace(error), self.lc.aws_request_id)
            failure.__cause__ = error
            logs.log_error(failure, self.lc._log)
        if self.ceiling is not None:
            failure = self._memory_check() or failure
        self.result, self.failure = result, failure
        return failure

    def cancelled(self, pool: Pool, retire: str | None) -> None:
        """The caller went away (its task was cancelled) before the invocation ended: it counts as
        an invocation that ran, and shows as `cancelled` among the recent ones."""
        self.lc._done = True
        self.function.recorder.record(self.lc, self.started, time.monotonic(), "cancelled", self.cold)
        pool.release(self.ctx, retire, "cold_starts" if self.cold else "warm_starts")

    def escape(self, pool: Pool, exc: BaseException) -> None:
        """A BaseException that is not an Exception (KeyboardInterrupt, SystemExit, GeneratorExit)
        left the code: end the invocation as failed and retire the context; the caller re-raises `exc`."""
        self.retire = f"{type(exc).__name__} was raised"
        try:
            self.finish(pool, None, exc)
        except FunctionError:
            pass

    def _memory_check(self) -> MemoryLimitExceeded | None:
        ceiling = self.ceiling
        if ceiling is None or self.retire is not None:
            return None
        peak = peak_rss_mb()
        if peak > ceiling and peak > self.peak_before:
            self.retire = "out of memory"
            return self._out_of_memory(f"peak memory {peak:.0f} MB passed the {ceiling} MB ceiling")
        return None

    def finish(
        self, pool: Pool, result: Any = None, error: BaseException | None = None, *, decided: bool = False
    ) -> Any:
        """Apply the limits, log, release the context, and return the result or raise the failure."""
        ctx = self.ctx
        if decided and not isinstance(error, _TimedOut):
            if self.ceiling is not None:
                # The flush ran after the caller had its answer; it can still break the limits.
                self.failure = self.failure or self._memory_check()
        elif error is None and result is None and self.ceiling is None:
            pass  # nothing to marshal or check (a wrapped app's invocation): the outcome stands
        else:
            self.outcome(result, error)
        if ctx._tmp is not None and self.retire is None:
            tmp_mb = self.function.config.tmp_mb
            used = over_quota(ctx._tmp, tmp_mb)  # one stat; a walk only when due (scratch.Quota)
            if used is not None:
                self.retire = f"scratch directory holds {used:.1f} MB, over tmp_mb={tmp_mb}"
        if self.lc._deferred:
            drop_deferred(self.lc, self.retire or "the invocation ended before it ran")
        ended = time.monotonic()
        if self.logging or self.lc._log is not None:
            self._report(ended)
        failure = self.failure
        failed = None if failure is None else failure_counter(failure, self.status)
        self.function.recorder.record(self.lc, self.started, ended, failed, self.cold)
        pool.release(ctx, self.retire, "cold_starts" if self.cold else "warm_starts", failed)
        if self.retire == "out of memory":
            self._check_resident(self.ceiling)
        if failure is not None:
            raise failure
        return self.result

    def _report(self, ended: float) -> None:
        """END and REPORT, to the logger and to the captured log."""
        lc, config = self.lc, self.function.config
        duration = (ended - self.started) * 1000
        init_ms = self.ctx.init_ms if self.cold else None
        peak = self.max_memory if self.max_memory is not None else peak_rss_mb()
        report = logs.report_line(lc.aws_request_id, duration, config.memory_size, peak, init_ms, self.status)
        logs.log_end_report(lc.aws_request_id, report, lc._log, self.logging)

    def _out_of_memory(self, detail: str) -> MemoryLimitExceeded:
        return MemoryLimitExceeded(
            f"Runtime exited with error: out of memory ({detail}; memory_mb={self.function.config.memory_mb})",
            self.lc.aws_request_id,
        )

    @staticmethod
    def _check_resident(memory_mb: int | None) -> None:
        import gc

        gc.collect()
        rss = current_rss_mb()
        if memory_mb is not None and rss is not None and rss > memory_mb:
            request_restart(f"resident memory {rss:.0f} MB stays above the {memory_mb} MB ceiling")


def call_handler(ctx: ExecutionContext, lc: LambdaContext, event: Any) -> Any:
    """The handler, called on the context's thread as the current invocation (sync handlers)."""
    ctx._serial += 1
    ctx.invocations += 1
    token = _current.set(lc)
    try:
        return ctx._target(event, lc)
    finally:
        _current.reset(token)
