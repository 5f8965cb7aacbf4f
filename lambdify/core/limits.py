"""Per-invocation limits besides the deadline: memory ceiling and scratch-directory quota.

Memory, in thread isolation, is a ceiling on the worker process (its contexts share it). The
check is the process's peak resident size (`getrusage`, about a microsecond) before and after
each invocation: if the peak rose past the ceiling during the invocation, even briefly, the
invocation fails with `MemoryLimitExceeded`. A hard `RLIMIT_DATA` backstop sits well above the
ceiling so that a runaway allocation fails with `MemoryError` instead of taking the machine:
not at the ceiling itself, because near an rlimit `Thread.start()` can hang and every thread's
stack counts against it. (`RLIMIT_AS` would also count a 64 MiB malloc arena per thread.)
"""

from __future__ import annotations

import _thread
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from . import hooks
from .logs import logger

if TYPE_CHECKING:
    from pathlib import Path

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
    _watcher.reset_after_fork()  # its thread is not in the child, nor are the parent's loops
    _Statm.pid = 0
    _live_scratch.clear()  # the parent's directories are the parent's to remove


hooks.at_fork(_reset_after_fork)


# -- graceful restart -----------------------------------------------------------------------

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


# -- scratch directory ----------------------------------------------------------------------


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


# -- deadlines on an event loop -------------------------------------------------------------


class Expiring(Protocol):
    def expire(self) -> None: ...


class DeadlineWatch:
    """The deadlines of one event loop's invocations, watched from a thread (one per process).

    A request costs a dict entry, and nothing is scheduled on the loop: a near timer pending at
    the head of asyncio's timer heap keeps the cancelled timers behind it (uvicorn schedules and
    cancels a keep-alive timer per request) from being dropped, and the loop then rebuilds its
    heap in Python now and then; a ticking timer cost 2-3% of a hello-world request's throughput.
    The watcher sleeps until the earliest deadline and hands each expiry to the loop.
    """

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._entries: dict[Expiring, float] = {}
        _watcher.register(self)

    def add(self, item: Expiring, deadline: float) -> None:
        """Call `item.expire()` on the loop once `time.monotonic()` passes `deadline`."""
        self._entries[item] = deadline
        if deadline < _watcher.wake_at:  # (the usual deadline comes after the watcher's next look)
            _watcher.wake_by(deadline)

    def discard(self, item: Expiring) -> None:
        self._entries.pop(item, None)

    def close(self) -> None:
        """The pool closed: the watcher stops once no deadline is left (no thread outlives the work)."""
        _watcher.poke()

    def _due(self, now: float) -> float:
        """On the watcher's thread: hand what is due to the loop; the next deadline after `now`."""
        upcoming = math.inf
        due = []
        for item, deadline in list(self._entries.items()):
            if deadline <= now:
                due.append(item)
            elif deadline < upcoming:
                upcoming = deadline
        if due:
            try:
                self._loop.call_soon_threadsafe(self._expire, due)
            except RuntimeError:  # the loop is closed: nothing of it is left to stop
                self._entries.clear()
        return upcoming

    def _expire(self, items: list[Expiring]) -> None:
        for item in items:
            if self._entries.pop(item, None) is not None:  # not finished meanwhile
                try:
                    item.expire()
                except Exception:  # pragma: no cover - a callback must not stop the others
                    logger.exception("deadline callback failed")


class _Watcher:
    """The thread behind every DeadlineWatch of the process: it sleeps until the earliest deadline
    it knows of (`wake_at`), and is woken early only for a deadline sooner than that."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._watches: weakref.WeakSet[DeadlineWatch] = weakref.WeakSet()
        self._started = False
        self.wake_at = math.inf

    def register(self, watch: DeadlineWatch) -> None:
        with self._cond:
            self._watches.add(watch)

    def wake_by(self, deadline: float) -> None:
        with self._cond:
            if deadline >= self.wake_at:
                return
            self.wake_at = deadline
            if self._started:
                self._cond.notify()
                return
            try:
                # A raw thread: nothing waits for it to start, so nothing can hang near a memory limit.
                _thread.start_new_thread(self._run, ())
                self._started = True
            except RuntimeError as exc:  # pragma: no cover - out of threads
                self.wake_at = math.inf
                logger.error("deadline watcher not started (%s); deadlines on event loops will not fire", exc)

    def poke(self) -> None:
        with self._cond:
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                # While it looks, `wake_at` is -inf: an `add` meanwhile waits for the lock, and
                # then finds out whether its deadline comes before the watcher's next look.
                self.wake_at = -math.inf
                now = time.monotonic()
                upcoming = min((watch._due(now) for watch in list(self._watches)), default=math.inf)
                self.wake_at = upcoming
                if upcoming == math.inf:  # no deadline left: the next `add` starts a new thread
                    self._started = False
                    return
                self._cond.wait(upcoming - now)

    def reset_after_fork(self) -> None:
        self.__init__()  # type: ignore[misc]


_watcher = _Watcher()
