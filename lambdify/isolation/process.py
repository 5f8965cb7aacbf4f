"""Process isolation: each execution context is a child process.

At the deadline the child is killed (SIGKILL) and the caller answered at once; `memory_mb` is
a hard RLIMIT_DATA on the child; a child that crashes costs one `Runtime.ExitError`, and the
next invocation starts (and INITs) a fresh child. An idle child is frozen (SIGSTOP) so none
of its code runs between invocations, and thawed (SIGCONT) when it is reused.

Children are forked from a small single-threaded template process (see `child.py`), never
from the server itself, whose threads would leave the child's locks in an unknown state.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..core.context import ExecutionContext
from ..core.errors import FunctionError, InitError, MemoryLimitExceeded
from ..core.invocation import Reported, _Invocation, _TimedOut
from ..core.invoke_async import _answer as answer_caller
from ..core.logs import logger
from ..core.marshal import to_json
from ..core.payload import MAX_REQUEST
from ..core.scratch import make_scratch_dir, remove_scratch_dir, reported_over, watch
from .channel import Channel, ChannelClosed, frame
from .locating import handler_location, init_import
from .template import describe_exit, template
from .thread import Worker

if TYPE_CHECKING:
    import asyncio

    from ..core.engine import Engine


class ProcessContext(ExecutionContext):
    """An execution context living in a child process; this object is the parent's handle on it."""

    def __init__(self, function: Engine, loop: asyncio.AbstractEventLoop | None) -> None:
        super().__init__(function, loop)
        self.pid = 0
        self.channel: Channel | None = None
        self.frozen = False
        self.dead = False
        self._scratch: Path | None = None  # the child's scratch dir: the child checks its quota

    @property
    def tmp(self) -> Path:
        if self._scratch is None:
            self._scratch = make_scratch_dir(self.function_name)
            watch(self._scratch, self._function.config.tmp_mb)  # measured a last time when removed
        return self._scratch

    def _remove_scratch(self) -> None:
        if self._scratch is not None:
            remove_scratch_dir(self._scratch)
            self._scratch = None

    def __repr__(self) -> str:
        return f"<ProcessContext {self.function_name} {self.id[:8]} pid={self.pid} invocations={self.invocations}>"

    def _spawn(self) -> Channel:
        config = self._function.config
        init_import.refuse(config.name)
        module, file, qualname = handler_location(self._function)
        tmp = self.tmp
        ours, theirs = socket.socketpair()
        try:
            self.pid = template.fork(theirs.fileno())
        finally:
            theirs.close()
        self.channel = Channel(ours)
        self.channel.expect_waits(config.timeout)
        self.channel.send(
            {
                "op": "init",
                "module": module,
                "file": file,
                "qualname": qualname,
                "sys_path": sys.path,
                "tmp": str(tmp),
                "id": self.id,
                "log_stream_name": self.log_stream_name,
                "memory_mb": config.memory_mb,
                "config": {
                    "timeout": config.timeout,
                    "memory_mb": config.memory_mb,
                    "tmp_mb": config.tmp_mb,
                    "stray_tasks": config.stray_tasks,
                    "isolation": "thread",
                },
                "env": {
                    "AWS_LAMBDA_FUNCTION_NAME": config.name,
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
                    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                    "AWS_LAMBDA_LOG_GROUP_NAME": self._function.log_group_name,
                    "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream_name,
                    "AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency" if self.provisioned else "on-demand",
                    "_HANDLER": f"{module}.{qualname}",
                    "TZ": "UTC",
                    "TMPDIR": str(tmp),
                },
            }
        )
        return self.channel

    def start(self, timeout: float) -> None:
        """INIT in a new child: fork it, send its spec, wait for it to be ready."""
        channel = self._spawn()
        try:
            self._ready(channel.recv(timeout))
        except ChannelClosed:
            raise self._died_in_init() from None

    async def ainit(self) -> None:
        """`start()` for async callers (the pool bounds it with `init_timeout`)."""
        channel = self._spawn()
        try:
            self._ready(await channel.arecv())
        except ChannelClosed:
            raise self._died_in_init() from None

    def _died_in_init(self) -> InitError:
        # (Its exit status is read, and the child gone: nothing is left to stop at SHUTDOWN.)
        self.dead = True
        return InitError(describe_exit(template.exit_status(self.pid, 2.0)) + " during INIT")

    def _ready(self, message: dict[str, Any]) -> None:
        if message["op"] == "init_error":
            raise InitError(message["message"], message["trace"])

    def abandon_init(self, timeout: TimeoutError) -> bool:
        self.kill()
        return False

    def cancel_init(self) -> None:
        self.kill()

    def kill(self) -> None:
        if not self.dead and self.pid:
            self.dead = True
            _signal_group(self.pid, signal.SIGKILL)

    def freeze(self) -> None:
        if not self.frozen and not self.dead and self.pid:
            self.frozen = True
            _signal_group(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.frozen:
            self.frozen = False
            _signal_group(self.pid, signal.SIGCONT)

    def died_idle(self) -> bool:
        """Whether the child died while idle (killed from outside, or with its template)."""
        if not self.dead and template.has_exited(self.pid):
            self.dead = True
            template.exit_status(self.pid, 0)  # (taken: nobody will ask for it)
        return self.dead

    def exit_error(self, request_id: str) -> FunctionError:
        self.dead = True
        return FunctionError("Runtime.ExitError", describe_exit(template.exit_status(self.pid, 2.0)), [], request_id)

    def close_here(self) -> None:
        """SHUTDOWN: SIGTERM (the child runs its hooks), a grace period, then SIGKILL."""
        if self.pid and not self.dead:
            self.thaw()
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            grace = min(self._function.config.shutdown_grace, 10.0)
            if template.exit_status(self.pid, grace) is None:
                logger.error("%r did not exit within %g s of SIGTERM; killing it", self, grace)
                self.kill()
            else:  # (what the handler started and left running goes with it; the child is reaped)
                _signal_group(self.pid, signal.SIGKILL, child_too=False)
            self.dead = True
        if self.channel is not None:
            self.channel.close()
        self._remove_scratch()

    async def aclose(self) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.close_here)


# -- drivers --------------------------------------------------------------------------------


def event_json(event: Any) -> str:
    """The event as the child will get it; checking it is encoding it, once, before anything starts."""
    try:
        text = to_json(event)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the event must be JSON-serialisable: {exc}") from None
    if len(text) > MAX_REQUEST:  # (compact ASCII: its length is its size in bytes)
        raise ValueError(f"the event is {len(text)} bytes of JSON, over Lambda's limit of {MAX_REQUEST} bytes")
    return text


def _json_string(text: str) -> str:
    # lambdify's own ids (uuid4 text) need no escaping; an id given by a caller may.
    return f'"{text}"' if len(text) == 36 and text.replace("-", "").isalnum() else to_json(text)


def invoke_message(event: str, invocation: Any, cold: bool) -> bytes:
    """What a child is sent for one invocation, around the event's JSON text. `report`: whether
    REPORT lines will want the child's peak memory."""
    lc = invocation.lc
    remaining = max(0.0, lc._deadline - time.monotonic())
    report = "true" if invocation.logging or lc._log is not None else "false"
    return frame(
        f'{{"op":"invoke","request_id":{_json_string(lc.aws_request_id)},"remaining":{remaining!r},'
        f'"cold":{"true" if cold else "false"},"report":{report},"event":{event}}}'
    )


def _answer(message: dict[str, Any], request_id: str) -> tuple[Any, BaseException | None]:
    error = message.get("error")
    if error is None:
        return message.get("result"), None
    if message.get("oom"):
        return None, Reported(
            MemoryLimitExceeded(f"Runtime exited with error: out of memory ({error['errorMessage']})", request_id)
        )
    return None, Reported(FunctionError(error["errorType"], error["errorMessage"], error["stackTrace"], request_id))


def _done(invocation: Any, message: dict[str, Any]) -> None:
    invocation.max_memory = invocation.ctx.peak_mb = message.get("max_memory_mb")
    log = invocation.lc._log
    if log is not None and message.get("log"):
        log.append(message["log"])
    if message.get("deferred_errors"):  # (logged in the child; counted here, where stats() reads)
        invocation.function.count("deferred_errors", message["deferred_errors"])
    if message.get("oom"):
        invocation.retire = "out of memory"
    elif invocation.retire is None and "tmp_mb" in message:  # the child found it over quota
        reported_over(invocation.ctx._scratch)
        invocation.retire = (
            f"scratch directory holds {message['tmp_mb']:.1f} MB, over tmp_mb={invocation.function.config.tmp_mb}"
        )


_DIED_IDLE: Final = "its process died while idle"


def _signal_group(pid: int, sig: int, child_too: bool = True) -> None:
    """Signal a child's process group (it, and what its handler started), or the child alone if
    its group is not there (yet: the fork has just happened) and `child_too`."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        if child_too:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def run_sync(function: Engine, event: Any, request_id: str, deadline: float | None = None) -> Any:
    event_text = event_json(event)
    pool = function.pool(None)
    while True:
        ctx, cold = pool.take(), False
        if ctx is None:
            ctx, cold = pool.acquire(request_id)
        assert isinstance(ctx, ProcessContext) and ctx.channel is not None
        if cold or not ctx.died_idle():
            break
        pool.release(ctx, _DIED_IDLE)  # (replaced before the event goes to it: no invocation lost)
    invocation = _Invocation(function, ctx, request_id, cold, deadline)
    invocation.peak_before = float("inf")  # memory_mb is enforced in the child
    invocation.marshal = False  # the result arrived as JSON
    ctx.thaw()
    result: Any = None
    error: BaseException | None = None
    try:
        ctx.channel.send_frame(invoke_message(event_text, invocation, cold))
        answer = ctx.channel.recv(invocation.remaining())
        result, error = _answer(answer, request_id)
        _done(invocation, answer.get("done") or ctx.channel.recv(invocation.remaining()))
    except TimeoutError:
        ctx.kill()
        result, error = None, _TimedOut()
    except (ChannelClosed, OSError):
        result, error = None, _exit(ctx, request_id)
    return invocation.finish(pool, result, error)


async def run_async(
    function: Engine,
    event: Any,
    request_id: str,
    deadline: float | None = None,
    *,
    on_ready: Any = None,
    log: list[str] | None = None,
    on_start: Any = None,
) -> Any:
    import asyncio

    event_text = event_json(event)
    pool = function.pool(asyncio.get_running_loop())
    while True:
        ctx, cold = pool.take(), False
        if ctx is None:
            ctx, cold = await pool.aacquire(request_id)
        assert isinstance(ctx, ProcessContext) and ctx.channel is not None
        if cold or not ctx.died_idle():
            break
        pool.release(ctx, _DIED_IDLE)
    invocation = _Invocation(function, ctx, request_id, cold, deadline, log)
    invocation.peak_before = float("inf")
    invocation.marshal = False
    if on_start is not None:
        on_start(invocation.lc._deadline)
    ctx.thaw()
    result: Any = None
    error: BaseException | None = None
    decided = False
    try:
        async with asyncio.timeout(invocation.remaining()):
            await ctx.channel.asend_frame(invoke_message(event_text, invocation, cold))
            answer = await ctx.channel.arecv()
            result, error = _answer(answer, request_id)
            if "done" in answer:
                _done(invocation, answer["done"])
            if on_ready is not None:
                failure = invocation.outcome(result, error)
                decided = True
                await answer_caller(on_ready, invocation.result, failure)
            if "done" not in answer:
                _done(invocation, await ctx.channel.arecv())
    except TimeoutError:
        ctx.kill()
        result, error, decided = None, _TimedOut(), False
    except (ChannelClosed, OSError):
        result, error, decided = None, _exit(ctx, request_id), False
    except BaseException:
        ctx.kill()  # the caller was cancelled mid-conversation: the child's state is unknown
        invocation.cancelled(pool, "its caller was cancelled")
        raise
    return invocation.finish(pool, result, error, decided=decided)


def _exit(ctx: ProcessContext, request_id: str) -> BaseException:
    return Reported(ctx.exit_error(request_id))


class _ProcessBackend:
    """Process isolation: each context is a child process; invocations travel over its channel."""

    name = "process"
    context_class = ProcessContext
    run_sync = staticmethod(run_sync)
    run_async = staticmethod(run_async)

    @staticmethod
    def worker(name: str) -> Worker:
        return Worker(name)

    @staticmethod
    def main_thread_worker() -> Any:
        raise ValueError("isolation='process' runs its contexts in child processes, not on the main thread")

    @staticmethod
    def check(engine: Engine) -> None:
        handler_location(engine)  # fail now, clearly, if a child could not import the handler


PROCESS: Final = _ProcessBackend()
