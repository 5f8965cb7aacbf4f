"""The process-wide hooks: one at fork (in the child) and one at exit, each running lambdify's
steps in a fixed order, instead of one hook per module.

At exit, contexts are retired first (their SHUTDOWN hooks may still use the scratch directory),
then what SHUTDOWN could not reach is cleaned up, then the last timers are disarmed.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import Final

RETIRE: Final = 0  # exit stage: retire live contexts (hooks run, resources close)
CLEAN: Final = 1  # exit stage: remove what retirement left (scratch of stuck contexts, helper processes)
FINAL: Final = 2  # exit stage: disarm timers that must not fire while the interpreter finalizes

_fork: list[Callable[[], None]] = []
_exit: list[tuple[int, int, Callable[[], None]]] = []


def at_fork(step: Callable[[], None]) -> None:
    """Run `step()` in a forked child, after the steps registered before it."""
    _fork.append(step)


def at_exit(step: Callable[[], None], stage: int = RETIRE) -> None:
    """Run `step()` at interpreter exit, in `stage` order (then registration order)."""
    _exit.append((stage, len(_exit), step))


def _after_fork() -> None:
    for step in _fork:
        _run(step)


def _at_exit() -> None:
    for _, _, step in sorted(_exit, key=lambda entry: entry[:2]):
        _run(step)


def _run(step: Callable[[], None]) -> None:
    try:
        step()
    except Exception:  # one failed step must not keep the others from running (printed, as atexit does)
        import traceback

        traceback.print_exc()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_at_exit)
