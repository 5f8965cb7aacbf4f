"""Every engine of this process (a `Function`'s, a middleware's, a `lambda_handler`'s):
`lambdify.stats()`, and what happens to them all at fork and at exit."""

from __future__ import annotations

import itertools
import weakref
from typing import TYPE_CHECKING, Any

from . import hooks

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["register", "snapshot", "stats"]

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_serials = itertools.count()


def register(engine: Engine) -> int:
    """Count `engine` in (weakly); its serial number orders `stats()`."""
    _engines.add(engine)
    return next(_serials)


def stats() -> dict[str, dict[str, Any]]:
    """Every Function and middleware of this process, by name: `fn.stats()` plus its contexts
    (`contexts`), its recent invocations (`recent`) and its latency histogram (`latency`).

    ```python
    import lambdify
    lambdify.stats()["app"]["invocations"]      # e.g. an ASGIMiddleware nobody holds
    ```
    Two functions with one name (two middlewares left at the default "app") are told apart
    as `app`, `app#2`, ...
    """
    return snapshot()


def snapshot(lines: Any = None) -> dict[str, dict[str, Any]]:
    """`stats()`, with each recent invocation's log lines given `lines(request_id)` (the status page)."""
    report: dict[str, dict[str, Any]] = {}
    for engine in sorted(_engines, key=lambda engine: engine._serial):
        key, n = engine.config.name, 1
        while key in report:
            n += 1
            key = f"{engine.config.name}#{n}"
        report[key] = engine.snapshot(lines)
    return report


def _after_fork() -> None:
    for engine in list(_engines):
        engine.forget_after_fork()


def _at_exit() -> None:
    # Contexts still alive at exit are retired like any other: hooks run, resources close.
    for engine in list(_engines):
        for pool in list(engine.pools.values()):
            pool.end_held_invocations()  # (a response body still open: its invocation ends now)
    for engine in list(_engines):
        if engine.pools:
            engine.config = engine.config.replace(shutdown_grace=min(engine.config.shutdown_grace, 5.0))
            engine.shutdown()


hooks.at_fork(_after_fork)
hooks.at_exit(_at_exit)
