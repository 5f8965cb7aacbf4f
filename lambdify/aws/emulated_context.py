"""An emulated execution context: one runtime process (`lambdify emulate -- COMMAND...`).

The process finds its own Runtime API (`runtime_api.py`) at `AWS_LAMBDA_RUNTIME_API`; its INIT
lasts from its start to its first `invocation/next`. It runs in a process group of its own,
so that freezing (SIGSTOP), SIGTERM and the kill at a deadline reach whatever it started too
(a container's `bootstrap` script and the interpreter it runs). Its stdout and stderr are read
here: copied to lambdify's own output, and into the current invocation's Tail log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import weakref
from typing import TYPE_CHECKING, Any, Final

from ..core.context import ExecutionContext
from ..core.errors import InitError
from ..core.logs import logger
from ..isolation.template import describe_exit
from .runtime_api import Next, RuntimeAPIServer, error_from_body

if TYPE_CHECKING:
    from ..core.engine import Engine

__all__ = ["EmulatedContext", "Exited"]

_STOP_GRACE: Final = 2.0  # seconds a runtime gets between SIGTERM and SIGKILL at SHUTDOWN
_live: weakref.WeakSet[EmulatedContext] = weakref.WeakSet()  # (killed at exit, whatever happened)


class Exited(Exception):
    """The runtime process ended (its wait status in `status`)."""

    def __init__(self, status: int | None) -> None:
        super().__init__(describe_exit(status))
        self.status = status


class EmulatedContext(ExecutionContext):
    """An execution context whose code is a runtime process, spoken to through the Runtime API."""

    def __init__(self, function: Engine, loop: asyncio.AbstractEventLoop | None) -> None:
        super().__init__(function, loop)
        self.pid = 0
        self.frozen = False
        self.status: int | None = None  # the wait status, once the process has ended
        self.peak_at_exit: float | None = None  # MB, from the exit's resource usage
        self.log: list[str] | None = None  # the current invocation's Tail log
        self._proc: subprocess.Popen[bytes] | None = None
        self._api = RuntimeAPIServer(self)
        self._ready: asyncio.Future[None] | None = None  # INIT's end: the first `next`
        self._waiter: asyncio.Future[Next] | None = None  # a `next` waiting for an event
        self._queued: Next | None = None  # an event handed over before the runtime asked
        self._request_id: str | None = None
        self._answer: asyncio.Future[tuple[str, bytes, dict[str, str]]] | None = None
        self._exited: asyncio.Future[None] | None = None
        self._partial: dict[int, bytes] = {}
        self._fds: list[int] = []
        self._stderr_fd = -1
        self._reaped = False
        self._pidfd = -1

    def __repr__(self) -> str:
        return f"<EmulatedContext {self.function_name} {self.id[:8]} pid={self.pid} invocations={self.invocations}>"

    @property
    def dead(self) -> bool:
        return self._exited is not None and self._exited.done()

    # -- INIT -----------------------------------------------------------------------------

    async def ainit(self) -> None:
        """Start the runtime process; INIT is over at its first `invocation/next`."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._exited = loop.create_future()
        address = await self._api.start()
        engine = self._function
        command = engine.func.command  # type: ignore[attr-defined]  # (an EmulatedRuntime)
        # (asyncio's own subprocess transport calls Popen just so; the pipes and the exit are watched here)
        self._proc = proc = subprocess.Popen(  # noqa: ASYNC220
            command,
            env=self._environment(address),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.pid = proc.pid
        _live.add(self)
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            fd = stream.fileno()
            os.set_blocking(fd, False)
            self._fds.append(fd)
            loop.add_reader(fd, self.drain, fd)
        assert proc.stderr is not None
        self._stderr_fd = proc.stderr.fileno()
        try:
            self._pidfd = os.pidfd_open(proc.pid)
            loop.add_reader(self._pidfd, self._reap)
        except (AttributeError, OSError):  # (no pidfd: Linux < 5.3, other systems) a waiting thread instead
            loop.run_in_executor(None, _wait_then, proc, loop, self._reap)
        try:
            await self._ready
        except Exited as exc:
            error = InitError(f"{exc} during INIT")
            error.error_type = "Runtime.ExitError"
            raise error from None

    def _environment(self, address: str) -> dict[str, str]:
        engine = self._function
        config = engine.config
        env = dict(os.environ)
        env.setdefault("AWS_REGION", "us-east-1")
        env.setdefault("AWS_DEFAULT_REGION", env["AWS_REGION"])
        env.setdefault("LAMBDA_TASK_ROOT", os.getcwd())
        env.setdefault("LAMBDA_RUNTIME_DIR", os.getcwd())
        # What Lambda's Python runtime of this Python's version sets (awslambdaric reads it: on
        # python3.12+ it polls `next` from a thread, so that SIGTERM reaches the runtime while idle).
        env.setdefault("AWS_EXECUTION_ENV", f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}")
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": address,
                "AWS_LAMBDA_FUNCTION_NAME": config.name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{config.timeout:g}",
                "AWS_LAMBDA_LOG_GROUP_NAME": engine.log_group_name,
                "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream_name,
                "AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency" if self.provisioned else "on-demand",
                "TZ": ":UTC",
                "TMPDIR": str(self.tmp),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def cancel_init(self) -> None:
        self.kill()

    # -- the Runtime API's side (runtime_api.Runtime) -------------------------------------

    async def next(self) -> Next:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        if self._request_id is not None and self._answer is not None and not self._answer.done():
            # Asking for the next event without answering the current one: Lambda fails it.
            self._answer.set_result(("error", b'{"errorType":"Runtime.NoResponse"}', {}))
        item, self._queued = self._queued, None
        if item is not None:
            return item
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def answer(self, request_id: str, kind: str, body: bytes, headers: dict[str, str]) -> bool:
        if request_id != self._request_id or self._answer is None or self._answer.done():
            return False
        self._answer.set_result((kind, body, headers))
        return True

    def init_error(self, body: bytes, headers: dict[str, str]) -> None:
        failure = error_from_body(body, headers, None)
        error = InitError(failure.error_message, failure.stack_trace)
        error.error_type = failure.error_type
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        elif self._answer is not None and not self._answer.done():
            self._answer.set_result(("error", body, headers))

    # -- one invocation -------------------------------------------------------------------

    async def invoke(self, item: Next) -> tuple[str, bytes, dict[str, str]]:
        """Hand `item` to the runtime and wait for its answer (the caller bounds the wait)."""
        assert self._exited is not None
        self._request_id = item.request_id
        self._answer = answer = asyncio.get_running_loop().create_future()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(item)
        else:
            self._queued = item
        try:
            await asyncio.wait((answer, self._exited), return_when=asyncio.FIRST_COMPLETED)
            if answer.done():
                kind, body, headers = answer.result()
                return kind, body, headers
            raise Exited(self.status)
        finally:
            self._request_id = self._answer = None
            self.drain_all()

    def measure_peak(self) -> float | None:
        """The process's peak resident memory so far (VmHWM), in MB."""
        try:
            with open(f"/proc/{self.pid}/status", "rb") as status:
                for line in status:
                    if line.startswith(b"VmHWM:"):
                        return int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
        return self.peak_at_exit

    # -- output ---------------------------------------------------------------------------

    def drain(self, fd: int) -> None:
        """Read what the runtime wrote to `fd`; copy each whole line to our own output and the Tail log."""
        if fd not in self._fds:
            return
        data = self._partial.pop(fd, b"")
        ended = False
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                ended = True
                break
            data += chunk
        err = fd == self._stderr_fd
        if ended:
            self._forget_fd(fd)
        else:
            head, newline, rest = data.rpartition(b"\n")
            if rest:
                self._partial[fd] = rest
            data = head + newline
        if data:
            self._emit(err, data.decode("utf-8", "replace"))

    def drain_all(self) -> None:
        for fd in list(self._fds):
            self.drain(fd)

    def _emit(self, err: bool, text: str) -> None:
        out = sys.stderr if err else sys.stdout
        try:
            out.write(text)
            out.flush()
        except (OSError, ValueError):
            pass
        if self.log is not None:
            self.log.append(text)

    def _forget_fd(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.remove(fd)
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(fd)

    # -- the process ending -----------------------------------------------------------------

    def _reap(self) -> None:
        if self._pidfd >= 0 and self._loop is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        proc = self._proc
        if proc is None or self._reaped:
            return
        self._reaped = True
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except ChildProcessError:
            status, usage = None, None
        self.status = status
        proc.returncode = os.waitstatus_to_exitcode(status) if status is not None else -1
        if usage is not None:
            self.peak_at_exit = usage.ru_maxrss / 1024
        self.drain_all()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                self._forget_fd(stream.fileno())
                stream.close()
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(Exited(status))

    def _signal(self, sig: int) -> None:
        if self.pid and self.status is None:
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def freeze(self) -> None:
        # (Called by the housekeeping thread, under the pool's lock: a signal is all it does.)
        if not self.frozen and self.status is None:
            self.frozen = True
            self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.frozen:
            self.frozen = False
            self._signal(signal.SIGCONT)

    async def aclose(self) -> None:
        """SHUTDOWN: SIGTERM (thawed first, so that it can act on it), a grace period, then SIGKILL."""
        if self._proc is not None and self._exited is not None and not self._exited.done():
            self._signal(signal.SIGTERM)
            self.thaw()
            try:
                async with asyncio.timeout(min(self._function.config.shutdown_grace, _STOP_GRACE)):
                    await asyncio.shield(self._exited)
            except TimeoutError:
                logger.warning("%r did not exit within %g s of SIGTERM; killing it", self, _STOP_GRACE)
                self.kill()
                await asyncio.shield(self._exited)
        self._api.close()
        _live.discard(self)
        self.close_here()

    def close_here(self) -> None:
        """The end of SHUTDOWN (and all of it off the loop): nothing of the process is left."""
        if self._proc is not None and self.status is None:
            self.kill()
            self.thaw()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
                pass
        if self._proc is not None:
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream is not None:
                    stream.close()
        _live.discard(self)
        super().close_here()


def _libc_prctl() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None


_prctl: Final = _libc_prctl() if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child before exec: die with lambdify, even when lambdify itself is SIGKILLed (Linux)."""
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait_then(proc: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop, reap: Any) -> None:
    while True:
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            break
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover
            time.sleep(0.01)
    loop.call_soon_threadsafe(reap)


def kill_all() -> None:
    """At exit: no runtime process outlives lambdify."""
    for ctx in list(_live):
        ctx.kill()
        ctx.thaw()
