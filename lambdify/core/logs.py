"""Lambda's per-invocation log lines, on the `lambdify` logger.

The library only adds a `NullHandler`; the CLI (or the application) decides where lines go.

`logging` is imported on first use, not with lambdify (it is a sizeable share of an import
that AWS Lambda pays at every cold start): until the application has imported `logging`,
nothing can have configured a handler, so there is nothing to log to.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

INFO = 20
_ERROR = 40


class _LazyLogger:
    """The `lambdify` logger, created (with its NullHandler) when first used."""

    _real: logging.Logger | None = None

    def _get(self) -> logging.Logger:
        real = _LazyLogger._real
        if real is None:
            import logging

            real = logging.getLogger("lambdify")
            if not any(isinstance(handler, logging.NullHandler) for handler in real.handlers):
                real.addHandler(logging.NullHandler())
            _LazyLogger._real = real
        return real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


logger: logging.Logger = _LazyLogger()  # type: ignore[assignment]


def enabled(level: int = INFO) -> bool:
    """Whether a record at `level` would reach a handler (False while `logging` is not even imported)."""
    real = _LazyLogger._real
    if real is None:
        if "logging" not in sys.modules:
            return False
        real = logger._get()  # type: ignore[attr-defined]
    return real.isEnabledFor(level)


def log_init_start(function_name: str) -> None:
    if enabled():
        logger.info("INIT_START Runtime Version: lambdify\tFunction: %s", function_name)


def start_line(request_id: str) -> str:
    return f"START RequestId: {request_id} Version: $LATEST"


def log_start(request_id: str) -> None:
    logger.info("START RequestId: %s Version: $LATEST", request_id)


def log_end_report(request_id: str, report: str, tail: list[str] | None, enabled: bool = True) -> None:
    """END and REPORT, to the logger and to the invocation's captured log (for Tail) if any."""
    end = f"END RequestId: {request_id}"
    if tail is not None:
        tail.append(end + "\n")
        tail.append(report + "\n")
    if enabled:
        status = report.partition("\tStatus: ")[2]  # (JSON logs: runtimeDone tells it too)
        logger.info(end, extra={"lambdify_status": status} if status else None)
        logger.info(report)


def report_line(
    request_id: str,
    duration_ms: float,
    memory_size: int,
    max_memory_mb: float,
    init_ms: float | None = None,
    status: str | None = None,
) -> str:
    """Lambda's REPORT line: `REPORT RequestId: …\\tDuration: 1.23 ms\\tBilled Duration: 2 ms\\t…`."""
    line = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
        f"Billed Duration: {max(1, math.ceil(duration_ms))} ms\tMemory Size: {memory_size} MB\t"
        f"Max Memory Used: {max(1, round(max_memory_mb))} MB"
    )
    if init_ms is not None:
        line += f"\tInit Duration: {init_ms:.2f} ms"
    if status is not None:
        line += f"\tStatus: {status}"
    return line


# -- per-invocation capture, for the Invoke API's `X-Amz-Log-Type: Tail` -------------------


class _TeeStream:
    """Stands in for sys.stdout/sys.stderr: what an invocation prints also goes to its own log."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from .current import _current

        lc = _current.get(None)
        if lc is not None and lc._log is not None:
            lc._log.append(text)
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _tail_handler() -> logging.Handler:
    import logging

    class TailHandler(logging.Handler):
        """Copies log records emitted inside an invocation that asked for its log into that log."""

        def __init__(self) -> None:
            super().__init__(logging.NOTSET)
            self.setFormatter(logging.Formatter("[%(levelname)s]\t%(asctime)s\t%(message)s"))

        def emit(self, record: logging.LogRecord) -> None:
            if record.name == "lambdify" or record.name.startswith("lambdify."):
                return  # START/END/REPORT are written to the capture directly
            from .current import _current

            lc = _current.get(None)
            if lc is not None and lc._log is not None:
                lc._log.append(self.format(record) + "\n")

    return TailHandler()


class _Capture:
    """The tee on sys.stdout/sys.stderr and the root handler, there only while an invocation that
    asked for its log (`X-Amz-Log-Type: Tail`) runs: counted, so that concurrent ones share them.

    Outside those invocations nothing of the process is changed: sys.stdout is the application's
    own, and the root logger has no handler of lambdify's (one would stop `logging.lastResort`
    from printing warnings, and make `logging.basicConfig()` do nothing).
    """

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.users = 0
        self.handler: Any = None
        self.streams: tuple[Any, Any, Any, Any] | None = None  # (stdout tee, stderr tee, originals...)

    def __enter__(self) -> None:
        with self.lock:
            self.users += 1
            if self.users > 1:
                return
            import logging

            self.handler = _tail_handler()
            logging.getLogger().addHandler(self.handler)
            out, err = _TeeStream(sys.stdout), _TeeStream(sys.stderr)
            self.streams = (out, err, sys.stdout, sys.stderr)
            sys.stdout, sys.stderr = out, err

    def __exit__(self, *exc_info: object) -> None:
        with self.lock:
            self.users -= 1
            if self.users > 0:
                return
            import logging

            logging.getLogger().removeHandler(self.handler)
            self.handler = None
            if self.streams is not None:
                out, err, original_out, original_err = self.streams
                self.streams = None
                # Put back what was there only if nobody replaced the tee meanwhile (their stream
                # wraps ours and passes through; taking it away would break theirs).
                if sys.stdout is out:
                    sys.stdout = original_out
                if sys.stderr is err:
                    sys.stderr = original_err


capture = _Capture()  # `with capture:` around an invocation whose log is captured


def tail(log: list[str], limit: int = 4096) -> bytes:
    """The last `limit` bytes of a captured log, as Lambda returns them in X-Amz-Log-Result."""
    return "".join(log).encode("utf-8", "replace")[-limit:]


def log_error(failure: Any, tail: list[str] | None) -> None:
    """An unhandled handler error, as Lambda's Python runtime logs it: `[ERROR] Type: message` + trace."""
    line = f"[ERROR] {failure.error_type}: {failure.error_message}\nTraceback (most recent call last):\n"
    line += "".join(failure.stack_trace)
    if tail is not None:
        tail.append(line if line.endswith("\n") else line + "\n")
    if enabled(_ERROR):
        logger.error("RequestId: %s %s", failure.request_id, line.rstrip("\n"))


def log_timeout(failure: Any, tail: list[str] | None) -> None:
    """A timeout, as Lambda logs it: `<request id> Task timed out after 3.00 seconds`."""
    line = f"{failure.request_id} {failure.error_message}"
    if tail is not None:
        tail.append(line + "\n")
    if enabled(_ERROR):
        logger.error("RequestId: %s", line)
