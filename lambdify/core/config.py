"""Function options: defaults, `LAMBDIFY_<OPTION>` environment overrides, validation.

Everything is checked when the function is decorated, so a bad option fails at import time
with a message naming the option and its allowed range, never at the first request.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
ISOLATIONS: Final = ("thread", "process")
EVENT_FORMATS: Final = ("v2", "v1", "alb", "alb-multi")  # alb-multi: ALB with multi-value headers on
STRAY_TASK_POLICIES: Final = ("await", "cancel", "warn")
#: Options that hold a callable: from the environment as a `module:attr` reference.
_CALLABLES: Final = {
    "init": "a callable taking the ExecutionContext",
    "on_failure": "a callable taking (event, error)",
}

#: Lambda's defaults, and lambdify's own for the options Lambda has no word on.
DEFAULTS: Final[Mapping[str, Any]] = {
    "timeout": 3.0,
    "memory_mb": None,
    "tmp_mb": 512,
    "init": None,
    "init_timeout": 10.0,
    "idle_ttl": 600.0,
    "concurrency": 1,
    "max_contexts": 16,
    "queue_timeout": 1.0,
    "provisioned": 0,
    "isolation": "thread",
    "event_format": "v2",
    "max_abandoned_threads": 8,
    "shutdown_grace": 30.0,
    "stray_tasks": "await",
    # Event invocations, as Lambda's asynchronous invocation (DESIGN §5): retried twice, about a
    # minute then two minutes apart, and given up after six hours at most.
    "max_retry_attempts": 2,
    "retry_delay": 60.0,
    "max_event_age": 21600.0,
    "on_failure": None,
}
OPTIONS: Final = ("name", *DEFAULTS)
ACCOUNT_ID: Final = "000000000000"  # the fake account in every ARN and event lambdify makes


def function_arn(name: str) -> str:
    """The ARN a function would have on Lambda (region from `AWS_REGION`, default us-east-1)."""
    return f"arn:aws:lambda:{os.environ.get('AWS_REGION', 'us-east-1')}:{ACCOUNT_ID}:function:{name}"


class Config:
    """The validated options of one Function (immutable once built)."""

    __slots__ = OPTIONS

    name: str
    timeout: float
    memory_mb: int | None
    tmp_mb: int
    init: Callable[..., Any] | None
    init_timeout: float
    idle_ttl: float
    concurrency: int | None
    max_contexts: int | None
    queue_timeout: float
    provisioned: int
    isolation: str
    event_format: str
    max_abandoned_threads: int
    shutdown_grace: float
    stray_tasks: str
    max_retry_attempts: int
    retry_delay: float
    max_event_age: float
    on_failure: Callable[..., Any] | None

    def __init__(self, **options: Any) -> None:
        for key, value in options.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is immutable; use replace()")

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={getattr(self, key)!r}" for key in OPTIONS)
        return f"Config({fields})"

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied and validated."""
        options = {key: getattr(self, key) for key in OPTIONS}
        options.update(_validate(changes))
        return Config(**options)

    @property
    def memory_size(self) -> int:
        """What `LambdaContext.memory_limit_in_mb` reports: the ceiling, or Lambda's 128 MB minimum."""
        return self.memory_mb if self.memory_mb is not None else 128


def build_config(name: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then `LAMBDIFY_<OPTION>` from the environment, then explicit `options` (which win)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r}; valid options: {', '.join(OPTIONS)}")
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {"name": name, **DEFAULTS}
    for key in OPTIONS:
        raw = environ.get(f"LAMBDIFY_{key.upper()}")
        if raw is not None and key not in options:
            merged[key] = _from_env(key, raw)
    merged.update(options)
    return Config(**_validate(merged))


def _from_env(key: str, raw: str) -> Any:
    raw = raw.strip()
    if key in _CALLABLES:
        from .loader import load_attribute

        return load_attribute(raw)
    if key in ("name", "isolation", "event_format", "stray_tasks"):
        return raw
    if raw.lower() in ("none", "null", ""):
        return None
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"LAMBDIFY_{key.upper()}={raw!r} is not a number") from None
    return int(number) if number.is_integer() and key not in ("timeout", "init_timeout") else number


def _number(key: str, value: Any, low: float, high: float, *, low_open: bool = False, integer: bool = False) -> Any:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise TypeError(f"{key} must be {kind}, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{key} must be {kind}, got NaN")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        left = f"{low:g} < {key}" if low_open else f"{low:g} <= {key}"
        raise ValueError(f"{key} must satisfy {left} <= {high:g}, got {value!r}")
    return value


def _optional(key: str, value: Any, low: float, high: float) -> Any:
    return None if value is None else _number(key, value, low, high, integer=True)


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


_VALIDATORS: Final[Mapping[str, Callable[[str, Any], Any]]] = {
    "timeout": lambda k, v: float(_number(k, v, 0, 900, low_open=True)),
    "memory_mb": lambda k, v: _optional(k, v, 128, 10240),
    "tmp_mb": lambda k, v: _number(k, v, 1, 10240, integer=True),
    "init_timeout": lambda k, v: float(_number(k, v, 0, 900, low_open=True)),
    "idle_ttl": lambda k, v: float(_number(k, v, 0, math.inf, low_open=True)),
    "concurrency": lambda k, v: _optional(k, v, 1, 10_000),
    "max_contexts": lambda k, v: _optional(k, v, 1, 10_000),
    "queue_timeout": lambda k, v: float(_number(k, v, 0, 900)),
    "provisioned": lambda k, v: _number(k, v, 0, 10_000, integer=True),
    "isolation": lambda k, v: _choice(k, v, ISOLATIONS),
    "event_format": lambda k, v: _choice(k, v, EVENT_FORMATS),
    "max_abandoned_threads": lambda k, v: _number(k, v, 0, 10_000, integer=True),
    "shutdown_grace": lambda k, v: float(_number(k, v, 0, 3600)),
    "stray_tasks": lambda k, v: _choice(k, v, STRAY_TASK_POLICIES),
    "max_retry_attempts": lambda k, v: _number(k, v, 0, 2, integer=True),
    # Not configurable on Lambda (about a minute); any positive delay here, so tests need not wait.
    "retry_delay": lambda k, v: float(_number(k, v, 0, 21600, low_open=True)),
    "max_event_age": lambda k, v: float(_number(k, v, 60, 21600)),
}


def _validate(options: Mapping[str, Any]) -> dict[str, Any]:
    checked = dict(options)
    for key, value in options.items():
        if key == "name":
            if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
                raise ValueError(f"name must be 1-64 letters, digits, '-' or '_' (Lambda's rule), got {value!r}")
        elif key in _CALLABLES:
            if value is not None and not callable(value):
                raise TypeError(f"{key} must be {_CALLABLES[key]}, got {value!r}")
        elif key in _VALIDATORS:
            checked[key] = _VALIDATORS[key](key, value)
    limit = checked.get("max_contexts")
    if limit is not None and checked.get("provisioned", 0) > limit:
        raise ValueError(f"provisioned must be <= max_contexts ({limit}), got {checked['provisioned']}")
    return checked
