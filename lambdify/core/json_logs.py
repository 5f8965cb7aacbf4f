"""Lambda's JSON logs (`AWS_LAMBDA_LOG_FORMAT=JSON`): one JSON object per line.

Platform records, as Lambda writes them in JSON mode::

    {"time": "...", "type": "platform.start", "record": {"requestId": "...", "version": "$LATEST"}}
    {"time": "...", "type": "platform.report", "record": {"requestId": "...", "status": "success",
     "metrics": {"durationMs": 1.2, "billedDurationMs": 2, "memorySizeMB": 128, "maxMemoryUsedMB": 45,
                 "initDurationMs": 12.3}}}

and application records from `logging`, as Lambda's Python runtime (awslambdaric's
`JsonFormatter`) writes them: `timestamp`, `level`, `message`, `logger`, `requestId`, plus
`errorType`/`errorMessage`/`stackTrace` for a logged exception and any `extra` fields.

The engine writes START/END/REPORT as text lines on the `lambdify` logger whatever the format;
this formatter turns those lines into platform records when it writes them. So the text
format costs nothing more, and the JSON one costs only where a line is actually written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import traceback
from typing import IO, Any, Final

from .current import _current

__all__ = ["JsonFormatter", "configure", "json_requested", "log_level"]

_LEVELS: Final = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
}
_RESERVED: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "aws_request_id"}
)
_START: Final = re.compile(r"START RequestId: (\S+) Version: (\S+)$")
_END: Final = re.compile(r"END RequestId: (\S+)$")
_INIT_START: Final = re.compile(r"INIT_START Runtime Version: (\S+)\tFunction: (\S+)$")
_REQUEST_ID: Final = re.compile(r"RequestId: ([0-9a-f-]{36})")
_METRICS: Final = {
    "Duration": ("durationMs", float),
    "Billed Duration": ("billedDurationMs", int),
    "Memory Size": ("memorySizeMB", int),
    "Max Memory Used": ("maxMemoryUsedMB", int),
    "Init Duration": ("initDurationMs", float),
}
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


def json_requested() -> bool:
    """Whether the environment asks for Lambda's JSON logs (`AWS_LAMBDA_LOG_FORMAT=JSON`)."""
    return os.environ.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON"


def log_level() -> int:
    """The application log level from `AWS_LAMBDA_LOG_LEVEL` (INFO, Lambda's default in JSON mode)."""
    name = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    return _LEVELS.get(name, logging.INFO)


def _utc(created: float, millis: bool) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{stamp}.{int(created % 1 * 1000):03d}Z" if millis else stamp + "Z"


def _report(line: str) -> dict[str, Any]:
    fields = line.split("\t")
    record: dict[str, Any] = {"requestId": fields[0].removeprefix("REPORT RequestId: "), "status": "success"}
    metrics: dict[str, Any] = {}
    for field in fields[1:]:
        key, _, value = field.partition(": ")
        if key == "Status":
            record["status"] = value
        elif key in _METRICS:
            name, kind = _METRICS[key]
            metrics[name] = kind(value.split(" ")[0])
    record["metrics"] = metrics
    return record


def platform_record(message: str) -> tuple[str, dict[str, Any]] | None:
    """The platform record (type, record) for one of the engine's lines, or None for any other line."""
    if message.startswith("REPORT RequestId: "):
        return "platform.report", _report(message)
    match = _START.match(message)
    if match:
        return "platform.start", {"requestId": match[1], "version": match[2]}
    match = _END.match(message)
    if match:
        return "platform.runtimeDone", {"requestId": match[1], "status": "success"}
    match = _INIT_START.match(message)
    if match:
        return "platform.initStart", {
            "initializationType": "on-demand",
            "phase": "init",
            "runtimeVersion": match[1],
            "functionName": match[2],
        }
    return None


class JsonFormatter(logging.Formatter):
    """Formats `lambdify`'s START/END/REPORT lines as platform records, and any other record as
    Lambda's Python runtime formats application logs."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "lambdify":
            platform = platform_record(message)
            if platform is not None:
                kind, body = platform
                if kind == "platform.runtimeDone":  # (a status other than success comes with the END line)
                    body["status"] = getattr(record, "lambdify_status", "success")
                return _encode({"time": _utc(record.created, True), "type": kind, "record": body})
        level = min(50, max(0, record.levelno)) // 10 * 10
        result: dict[str, Any] = {
            "timestamp": _utc(record.created, False),
            "level": logging.getLevelName(level),
            "message": record.msg if isinstance(record.msg, dict) and not record.args else message,
            "logger": record.name,
            "requestId": _request_id(record, message),
        }
        if record.exc_info and record.exc_info[0] is not None:
            result["errorType"] = record.exc_info[0].__name__
            result["errorMessage"] = str(record.exc_info[1])
            result["stackTrace"] = traceback.format_tb(record.exc_info[2])
            result["location"] = f"{record.pathname}:{record.funcName}:{record.lineno}"
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in result:
                result[key] = value
        return _encode({key: value for key, value in result.items() if value is not None})


def _request_id(record: logging.LogRecord, message: str) -> str | None:
    request_id = getattr(record, "aws_request_id", None)
    if request_id:
        return str(request_id)
    lc = _current.get(None)
    if lc is not None:
        return lc.aws_request_id
    if record.name == "lambdify":  # (an error line the engine writes after the invocation left its task)
        match = _REQUEST_ID.search(message)
        if match:
            return match[1]
    return None


def configure(stream: IO[str] | None = None, level: int | None = None) -> logging.Handler:
    """Write JSON logs to `stream` (stderr): the application's records at `level` (from
    `AWS_LAMBDA_LOG_LEVEL`, default INFO) and up, lambdify's platform records always.

    Replaces the handlers lambdify's CLI installed before; returns the new handler.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_lambdify_json", False)]:
        root.removeHandler(old)
    handler._lambdify_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(log_level() if level is None else level)
    # Platform records are Lambda's system logs: their level is not the application's.
    own = logging.getLogger("lambdify")
    for old in [h for h in own.handlers if not isinstance(h, logging.NullHandler)]:
        own.removeHandler(old)
    own.addHandler(handler)
    own.setLevel(logging.INFO)
    own.propagate = False
    return handler
