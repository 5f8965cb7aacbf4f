"""The memory ceiling (`memory_mb`), measured on the worker process.

Memory, in thread isolation, is a ceiling on the worker process (its contexts share it). The
check is the process's peak resident size (`getrusage`, about a microsecond) before and after
each invocation: if the peak rose past the ceiling during the invocation, even briefly, the
invocation fails with `MemoryLimitExceeded`. A hard `RLIMIT_DATA` backstop sits well above the
ceiling so that a runaway allocation fails with `MemoryError` instead of taking the machine:
not at the ceiling itself, because near an rlimit `Thread.start()` can hang and every thread's
stack counts against it. (`RLIMIT_AS` would also count a 64 MiB malloc arena per thread.)
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Final

from . import hooks
from .logs import logger

if TYPE_CHECKING:
    pass

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

_MB: Final = 1024 * 1024
_RSS_UNIT: Final = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


# -- memory ---------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """The process's peak resident set size in MB (never falls)."""
    if resource is None:  # pragma: no cover
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT / _MB


class _Statm:
    """Current resident size from /proc/self/statm through a kept descriptor (a pread, ~2 µs)."""

    fd: int | None = None
    pid = 0

    @classmethod
    def rss_mb(cls) -> float | None:
        if cls.pid != os.getpid():
            try:
                cls.fd, cls.pid = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC), os.getpid()
            except OSError:
                return None
        assert cls.fd is not None
        fields = os.pread(cls.fd, 128, 0).split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") / _MB


def current_rss_mb() -> float | None:
    """The process's resident size now, in MB (None where /proc is missing)."""
    return _Statm.rss_mb()


_backstop_mb: int | None = None


def apply_memory_backstop(memory_mb: int) -> None:
    """Lower this process's RLIMIT_DATA to a backstop well above `memory_mb` (the lowest ceiling wins).

    Set `LAMBDIFY_MEMORY_BACKSTOP=0` to leave the process's limits alone.
    """
    global _backstop_mb
    if os.environ.get("LAMBDIFY_MEMORY_BACKSTOP", "1") == "0":
        return
    if resource is None or not hasattr(resource, "RLIMIT_DATA"):  # pragma: no cover
        _warn_once("rlimit", "memory_mb: this platform has no RLIMIT_DATA; the ceiling is only measured")
        return
    data_mb = _vm_data_mb()
    backstop = int(data_mb + 2 * memory_mb)
    if _backstop_mb is not None and _backstop_mb <= backstop:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    wanted = backstop * _MB
    if soft != resource.RLIM_INFINITY and soft <= wanted:
        return
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (wanted, hard))
    _backstop_mb = backstop
    logger.debug("memory backstop: RLIMIT_DATA set to %d MB (ceiling %d MB)", backstop, memory_mb)


def _vm_data_mb() -> float:
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover
        pass
    return 0.0


def _reset_after_fork() -> None:
    _Statm.pid = 0


hooks.at_fork(_reset_after_fork)
