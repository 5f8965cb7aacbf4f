"""Asking the server for a graceful restart of this worker, as uWSGI's harakiri and
reload-on-rss do: after too many abandoned threads, or when resident memory stays above the ceiling."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from .logs import logger

_restart_hooks: list[Callable[[str], None]] = []
_restart_requested = False


def on_restart_request(hook: Callable[[str], None]) -> None:
    """Servers register how to restart their worker gracefully (e.g. SIGTERM to a gunicorn worker)."""
    _restart_hooks.append(hook)


def request_restart(reason: str) -> None:
    """Ask the server for a graceful restart of this worker, as uWSGI's harakiri/reload-on-rss would."""
    global _restart_requested
    if _restart_requested:
        return
    _restart_requested = True
    logger.error("worker %d needs a restart: %s", os.getpid(), reason)
    for hook in _restart_hooks or [_restart_supervised_worker]:
        hook(reason)


def _restart_supervised_worker(reason: str) -> None:
    """Where a supervisor restarts workers that exit (gunicorn's arbiter, uvicorn --workers),
    end this one gracefully with SIGTERM; a lone server process is left running (and said so)."""
    import signal

    multiprocessing = sys.modules.get("multiprocessing")
    supervised = "gunicorn.workers.base" in sys.modules or (
        "uvicorn" in sys.modules and multiprocessing is not None and multiprocessing.parent_process() is not None
    )
    if supervised:
        logger.error("worker %d: stopping gracefully so that its server starts a fresh one", os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        logger.error("worker %d: no supervising server to restart it; restart the process yourself", os.getpid())


def restart_requested() -> bool:
    return _restart_requested
