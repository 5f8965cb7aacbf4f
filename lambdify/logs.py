"""Lambda's per-invocation log lines, on the `lambdify` logger.

The library only adds a `NullHandler`; the CLI (or the application) decides where lines go.
"""

from __future__ import annotations

import logging
import math

logger = logging.getLogger("lambdify")
logger.addHandler(logging.NullHandler())

_INFO = logging.INFO


def enabled() -> bool:
    return logger.isEnabledFor(_INFO)


def log_init_start(function_name: str) -> None:
    if logger.isEnabledFor(_INFO):
        logger.info("INIT_START Runtime Version: lambdify\tFunction: %s", function_name)


def log_start(request_id: str) -> None:
    logger.info("START RequestId: %s Version: $LATEST", request_id)


def log_end(request_id: str) -> None:
    logger.info("END RequestId: %s", request_id)


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


def log_report(*args: object, **kwargs: object) -> None:
    logger.info(report_line(*args, **kwargs))  # type: ignore[arg-type]
