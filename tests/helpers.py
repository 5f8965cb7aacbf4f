"""Small helpers shared by the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(check: Callable[[], Any], within: float = 5.0) -> bool:
    """Whether `check()` becomes true within `within` seconds (looked at every 10 ms)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return bool(check())
        time.sleep(0.01)
    return True
