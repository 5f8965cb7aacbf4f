"""Each context's private scratch directory (`tmp`, mode 0700) and its quota (`tmp_mb`)."""

from __future__ import annotations

import os
import sys
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


_live_scratch: set[Path] = set()


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
    """Remove a scratch directory without following symlinks out of it."""
    import shutil

    _live_scratch.discard(path)

    def report(function: object, name: str, exc: BaseException) -> None:
        if not isinstance(exc, FileNotFoundError):
            logger.warning("could not remove %s: %s", name, exc)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=report)
    else:
        shutil.rmtree(path, onerror=lambda f, n, info: report(f, n, info[1]))


def scratch_usage_mb(path: Path) -> float:
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


hooks.at_fork(_live_scratch.clear)  # the parent's directories are the parent's to remove
