"""The processes of process isolation: the fork template, and the execution-context child.

The template is a small single-threaded interpreter started once per server process. It
imports lambdify and nothing of the user's, and forks a child for each new execution context
(forking a threaded server would copy its locks in whatever state they are in). It reaps its
children and reports their exit status to the server. Both die with their parent
(`PR_SET_PDEATHSIG`), so no orphan outlives a killed server.

A child becomes one execution context: it imports the handler's module (INIT, as on Lambda),
runs `init`, then serves invocations one at a time over its socket.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import Any

from ..core.background import flush_here
from ..core.current import _current
from ..core.errors import stack_trace
from ..core.lambda_context import LambdaContext
from ..core.marshal import marshal
from ..core.memory import peak_rss_mb
from ..core.payload import MAX_RESPONSE, too_large
from ..core.scratch import over_quota
from .channel import Channel, ChannelClosed, encode

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the process that started it exits (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


# -- the template -------------------------------------------------------------------------


def template_main() -> None:
    import selectors

    # What every child needs, imported once here so that each fork starts with it.
    import tempfile  # noqa: F401

    # (and `lambdify` itself, which the command line imported: the façade that user modules import)
    from ..core import background, context, invocation, loader, logs, memory, scratch  # noqa: F401

    die_with_parent()
    control = socket.socket(fileno=int(sys.argv[1]))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                data, fds, _flags, _addr = socket.recv_fds(control, 1 << 16, 4)
                if not data:
                    os._exit(0)  # the server is gone
                request = _decode(data)
                pid = os.fork()
                if pid == 0:
                    # Its own process group: what the handler starts is stopped, frozen and killed
                    # with it (set on both sides of the fork, so that neither can be signalled first).
                    os.setpgid(0, 0)
                    selector.close()
                    control.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    child_main(fds[0])
                try:
                    os.setpgid(pid, pid)
                except OSError:  # (it has set it already, or exited)
                    pass
                for fd in fds:
                    os.close(fd)
                control.sendall(encode({"op": "forked", "id": request["id"], "pid": pid})[4:])
            else:
                os.read(wake_r, 512)
                _reap(control)


def _decode(data: bytes) -> Any:
    import json

    return json.loads(data)


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.sendall(encode({"op": "exit", "pid": pid, "status": status})[4:])


# -- an execution-context child ---------------------------------------------------------------


class _Capture:
    """sys.stdout/sys.stderr of a child: writes reach the real stream and the invocation's log."""

    def __init__(self, stream: Any, log: list[str]) -> None:
        self._stream = stream
        self._log = log

    def write(self, text: str) -> int:
        self._log.append(text)
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def child_main(fd: int) -> None:
    """Run one execution context until told to shut down; never returns."""
    code = 0
    try:
        die_with_parent()
        channel = Channel(socket.socket(fileno=fd))
        _serve(channel)
    except (ChannelClosed, KeyboardInterrupt):  # (the server gone, or Ctrl-C in its terminal: quietly)
        pass
    except SystemExit as exc:  # the handler's sys.exit(n): the runtime exits with n, as on Lambda
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: B036 - a child must always end through os._exit
        import traceback

        traceback.print_exc()  # (as Python itself: the traceback, then exit status 1)
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class _Refused(Exception):
    """The handler's module invoked a process-isolated function while INIT imported it."""


class _Stop(BaseException):
    """SIGTERM: finish SHUTDOWN and exit."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stop


def _serve(channel: Channel) -> None:
    spec = channel.recv()
    os.environ.update(spec["env"])
    time.tzset()
    sys.path[:] = spec["sys_path"]
    import tempfile

    tempfile.tempdir = spec["tmp"]
    if spec.get("memory_mb"):
        import resource

        limit = spec["memory_mb"] * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    started = time.perf_counter()
    try:
        ctx = _initialise(spec)
    except BaseException as exc:  # noqa: B036 - reported to the server as an InitError
        message = str(exc) if isinstance(exc, _Refused) else f"{type(exc).__name__}: {exc}"
        channel.send({"op": "init_error", "message": message, "trace": stack_trace(exc)})
        return
    # From here SIGTERM means a graceful SHUTDOWN; before, its default action ends the child.
    signal.signal(signal.SIGTERM, _stop)
    channel.send({"op": "ready", "init_ms": (time.perf_counter() - started) * 1000})
    try:
        while True:
            message = channel.recv()
            if message["op"] == "invoke":
                _invoke(channel, ctx, message)
            elif message["op"] == "shutdown":
                break
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ctx.close_here()


def _initialise(spec: dict[str, Any]) -> Any:
    from pathlib import Path

    from ..core.context import ExecutionContext
    from ..core.engine import Engine
    from ..core.loader import import_file, import_module_named
    from .locating import init_import

    init_import.module = spec["file"] or spec["module"]
    try:
        module = import_file(Path(spec["file"])) if spec.get("file") else import_module_named(spec["module"])
    finally:
        init_import.module = None
        if init_import.refusal:  # (also if the module caught the error)
            raise _Refused(init_import.refusal)
    target: Any = module
    for part in spec["qualname"].split("."):
        target = getattr(target, part)
    engine = getattr(target, "engine", None)  # (a `Function`: what `@handler` made)
    if not isinstance(engine, Engine):
        raise TypeError(f"{spec['module']}.{spec['qualname']} is not a @handler function")
    engine.config = engine.config.replace(**spec["config"])
    ctx = ExecutionContext(engine, None)
    ctx._tmp = Path(spec["tmp"])
    ctx.id = spec["id"]
    ctx.log_stream_name = spec["log_stream_name"]
    ctx.init_here()
    return ctx


def _invoke(channel: Channel, ctx: Any, message: dict[str, Any]) -> None:
    """One invocation: the answer goes out as soon as the handler returns; the flush follows.

    When there is nothing to flush, the answer and the end of the invocation travel as one
    message (the common case costs one round trip).
    """
    request_id = message["request_id"]
    lc = LambdaContext(ctx, request_id, time.monotonic() + message["remaining"], message["cold"])
    log: list[str] = []
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Capture(stdout, log), _Capture(stderr, log)
    ctx._serial += 1
    ctx.invocations += 1
    token = _current.set(lc)
    pending = True
    failed = 0  # deferred items that failed, counted by this child's Function (told to the server)
    try:
        reply: dict[str, Any]
        try:
            reply = {"op": "answer", "result": ctx.settle(ctx._target(message["event"], lc))}
        except MemoryError:
            reply = {"op": "answer", "error": _payload("Runtime.OutOfMemory", "MemoryError"), "oom": True}
        except Exception as exc:
            reply = {"op": "answer", "error": _payload(type(exc).__name__, str(exc), stack_trace(exc))}
        pending = bool(lc._deferred or lc._tasks)
        if pending:
            _send_answer(channel, reply)
            before = ctx._function.stats()["deferred_errors"]
            flush_here(ctx, lc)
            failed = ctx._function.stats()["deferred_errors"] - before
        else:
            lc._done = True
    finally:
        _current.reset(token)
        sys.stdout, sys.stderr = stdout, stderr
    # Only what the parent needs to hear: the common case is a short message.
    done: dict[str, Any] = {"op": "done"}
    if log:
        done["log"] = "".join(log)
    if failed:
        done["deferred_errors"] = failed
    if message.get("report", True):
        done["max_memory_mb"] = peak_rss_mb()
    if reply.get("oom"):
        done["oom"] = True
    used = over_quota(ctx._tmp, ctx._function.config.tmp_mb)
    if used is not None:
        done["tmp_mb"] = used
    if pending:
        channel.send(done)
    else:
        reply["done"] = done
        _send_answer(channel, reply)
    if reply.get("oom"):
        raise _Stop  # a fresh child serves the next invocation


def _send_answer(channel: Channel, reply: dict[str, Any]) -> None:
    """The answer, or the error Lambda's runtime would give for its result: not JSON, too large
    (over Lambda's response limit), or out of memory while it is encoded."""
    try:
        data = encode(reply)
    except (TypeError, ValueError) as exc:  # the result is not JSON: as Lambda's MarshalError
        _instead(reply, _payload("Runtime.MarshalError", f"Unable to marshal response: {exc}"))
    except MemoryError:
        _instead(reply, _payload("Runtime.OutOfMemory", "MemoryError"))
        reply["oom"] = True
        if "done" in reply:
            reply["done"]["oom"] = True
    else:
        if len(data) <= MAX_RESPONSE or "result" not in reply:
            channel.send_frame(data)
            return
        size = len(marshal(reply["result"]))  # (the frame is larger than the result: measure the result)
        if size <= MAX_RESPONSE:
            channel.send_frame(data)
            return
        _instead(reply, _payload("Function.ResponseSizeTooLarge", too_large(size)))
    channel.send(reply)


def _instead(reply: dict[str, Any], error: dict[str, Any]) -> None:
    reply.pop("result", None)
    reply["error"] = error


def _payload(error_type: str, message: str, trace: list[str] | None = None) -> dict[str, Any]:
    return {"errorType": error_type, "errorMessage": message, "stackTrace": trace or []}
