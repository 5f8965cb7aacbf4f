"""Each context's private scratch directory (`tmp`, mode 0700) and its quota (`tmp_mb`).

Measuring a directory means walking it, which costs in proportion to what it holds (about 6 µs
per file). So the check after each invocation (`over_quota`) costs one `stat` of the directory,
and walks it only when that is both worth it and cheap enough (`Quota.check`); removing the
directory at SHUTDOWN always walks it first, and says so in a log line if it was over quota.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Final

from . import hooks
from .logs import logger

if TYPE_CHECKING:
    from pathlib import Path

_MB: Final = 1024 * 1024


def _scratch_base() -> Path:
    import tempfile
    from pathlib import Path

    base = Path(tempfile.gettempdir()) / f"lambdify-{os.getuid()}"
    try:
        base.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = base.lstat()
    import stat

    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeError(f"{base} is not a directory owned by this user; refusing to use it as scratch base")
    if info.st_mode & 0o077:
        os.chmod(base, 0o700)
    return base


_live_scratch: set[Path] = set()  # made by this process: it removes them
_quotas: dict[Path, Quota] = {}  # what is known of each checked directory's usage


def make_scratch_dir(function_name: str) -> Path:
    """A new private (0700) directory for one execution context."""
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix=f"{function_name}-", dir=_scratch_base()))
    _live_scratch.add(path)
    return path


def _remove_leftovers() -> None:
    # Contexts whose SHUTDOWN never ran (an abandoned thread still stuck) leave nothing behind.
    for path in list(_live_scratch):
        remove_scratch_dir(path)


hooks.at_exit(_remove_leftovers, hooks.CLEAN)


def remove_scratch_dir(path: Path) -> None:
    """Remove a scratch directory made by this process, without following symlinks out of it.

    A directory that was checked against a quota is measured a last time first: what the checks
    after invocations may not have seen yet (see `Quota.check`) is logged here at the latest.
    (An isolated child leaves its directory to the parent that made it, which measures it then.)
    """
    import shutil

    quota = _quotas.pop(path, None)
    if path not in _live_scratch:
        return
    _live_scratch.discard(path)
    if quota is not None and not quota.reported:
        used = scratch_usage_mb(path)
        if used > quota.tmp_mb:
            logger.warning(
                "scratch directory %s held %.1f MB when its context retired, over tmp_mb=%d "
                "(it grew after the last check)",
                path,
                used,
                quota.tmp_mb,
            )

    def report(function: object, name: str, exc: BaseException) -> None:
        if not isinstance(exc, FileNotFoundError):
            logger.warning("could not remove %s: %s", name, exc)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=report)
    else:
        shutil.rmtree(path, onerror=lambda f, n, info: report(f, n, info[1]))


def scratch_usage_mb(path: Path | str) -> float:
    """Disk space used under `path` (allocated blocks, symlinks not followed), in MB."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += info.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total / _MB


# When to walk a directory (Quota.check): at most once per _SHARE times the last walk's duration,
# so that walking takes at most 1/_SHARE of a context's time; and, when its top level did not
# change, at most once a _REWALK and once per (last walk's duration / _BUDGET) invocations, so
# that those walks cost an invocation at most _BUDGET on average, however rare invocations are.
_SHARE: Final = 20
_REWALK: Final = 1.0
_BUDGET: Final = 10e-6
# A directory's mtime is as coarse as the kernel's clock tick (1 s on some filesystems): a
# change made in the same tick as a walk leaves it as it was, so a recent mtime proves nothing.
_COARSE_NS: Final = 1_000_000_000


class Quota:
    """One scratch directory's usage against its quota, measured when it may have changed.

    `check()`, after each invocation, costs one `stat` of the directory. It walks the directory
    when its mtime moved (an entry was added, removed or renamed at its top level: the first
    files an invocation writes are measured right after it), or, for what does not move it (a
    file growing in place, writes in a subdirectory), once it is due by `_REWALK` and `_BUDGET`;
    in both cases only when walking takes at most 1/`_SHARE` of the time since the last walk.
    """

    __slots__ = ("_lock", "calls", "cost", "path", "reported", "stamp", "tmp_mb", "used", "walked")

    def __init__(self, path: Path | str, tmp_mb: int) -> None:
        self.path = os.fspath(path)
        self.tmp_mb = tmp_mb
        self.used = 0.0  # MB, at the last walk
        self.stamp = -1  # the directory's mtime (ns) at the last walk; -1: unknown
        self.walked = 0.0  # when the last walk ended (time.monotonic)
        self.cost = 0.0  # how long it took (s)
        self.calls = 0  # checks since
        self.reported = False  # found over quota (the context is being retired for it)
        self._lock = threading.Lock()  # one walk at a time (a context may run invocations concurrently)

    def check(self) -> float | None:
        """The MB used if over quota, else None."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return None  # removed by the handler: it holds nothing
        self.calls += 1
        since, cost = time.monotonic() - self.walked, self.cost
        if since >= _SHARE * cost and (mtime != self.stamp or (since >= _REWALK and self.calls * _BUDGET >= cost)):
            self._walk(mtime)
        if self.used > self.tmp_mb:
            self.reported = True
            return self.used
        return None

    def _walk(self, mtime: int) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another invocation of this context is measuring it
        try:
            started = time.monotonic()
            self.used = scratch_usage_mb(self.path)
            self.walked = now = time.monotonic()
            self.cost, self.calls = now - started, 0
            self.stamp = mtime if time.time_ns() - mtime > _COARSE_NS else -1
        finally:
            self._lock.release()


def over_quota(path: Path, tmp_mb: int) -> float | None:
    """After an invocation: the MB that `path` holds if over `tmp_mb`, else None (see `Quota`)."""
    quota = _quotas.get(path)
    if quota is None:
        quota = _quotas[path] = Quota(path, tmp_mb)
    return quota.check()


def watch(path: Path, tmp_mb: int) -> None:
    """Measure `path` against `tmp_mb` when it is removed (a directory checked in another process)."""
    _quotas.setdefault(path, Quota(path, tmp_mb))


def reported_over(path: Path) -> None:
    """`path` was found over quota elsewhere (in a child process): its context retires for it."""
    quota = _quotas.get(path)
    if quota is not None:
        quota.reported = True


def _forget() -> None:
    _live_scratch.clear()  # the parent's directories are the parent's to remove
    _quotas.clear()


hooks.at_fork(_forget)
