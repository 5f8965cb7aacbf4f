"""Resources: objects an execution context creates lazily and checks lazily before reuse.

```python
ctx.resources.add("db", lambda: sqlite3.connect(path), check=lambda c: c.execute("select 1"))
conn = context.resources["db"]
```

A warm connection may have died while the context sat idle (the server restarted, a proxy
dropped it). Rather than pinging on every use, `check` runs at most once per invocation and
only after the resource has been idle `check_after` seconds; a failed check closes the object
and creates a new one, so the caller always gets a working object.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from .context import ExecutionContext

from . import hooks
from .logs import logger

_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


hooks.at_fork(_after_fork)


def _is_awaitable(value: object) -> bool:
    return hasattr(value, "__await__")


class _Entry:
    __slots__ = (
        "alock",
        "check",
        "check_after",
        "checked_serial",
        "close",
        "created_at",
        "eager",
        "factory",
        "last_used",
        "lock",
        "max_age",
        "name",
        "obj",
        "pid",
        "present",
        "thread",
        "stats",
    )

    def __init__(self, name: str, factory: Callable[[], Any], stats: dict[str, int], **options: Any) -> None:
        self.name = name
        self.factory = factory
        self.check: Callable[[Any], Any] | None = options["check"]
        self.close: Callable[[Any], Any] | None = options["close"]
        self.check_after: float = options["check_after"]
        self.max_age: float | None = options["max_age"]
        self.eager: bool = options["eager"]
        self.stats = stats
        self.present = False
        self.obj: Any = None
        self.pid = 0
        self.thread = 0  # the thread that created the object: it closes it too (sqlite3 insists)
        self.created_at = 0.0
        self.last_used = 0.0
        self.checked_serial = -1
        self.lock = threading.RLock()
        self.alock: asyncio.Lock | None = None


class Resources:
    """The named resources of one execution context (`ctx.resources`, `context.resources`)."""

    def __init__(self, context: ExecutionContext, stats: dict[str, dict[str, int]]) -> None:
        self._context = context
        self._stats = stats
        self._entries: dict[str, _Entry] = {}

    def add(
        self,
        name: str,
        factory: Callable[[], Any],
        check: Callable[[Any], Any] | None = None,
        close: Callable[[Any], Any] | None = None,
        check_after: float = 0.0,
        max_age: float | None = None,
        eager: bool = False,
    ) -> None:
        """Register `factory` under `name`; nothing is created until first use (or INIT, if `eager`).

        `check(obj)` returning False or raising means "replace it"; `close(obj)` defaults to
        `obj.close()` (or `await obj.aclose()`).
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"resource name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"resource {name!r} is already registered")
        for option, value in (("factory", factory), ("check", check), ("close", close)):
            if value is not None and not callable(value):
                raise TypeError(f"resource {name!r}: {option} must be callable, got {value!r}")
        if isinstance(check_after, bool) or not isinstance(check_after, (int, float)) or check_after < 0:
            raise ValueError(f"resource {name!r}: check_after must be a number >= 0, got {check_after!r}")
        if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age <= 0):
            raise ValueError(f"resource {name!r}: max_age must be None or a number > 0, got {max_age!r}")
        stats = self._stats.setdefault(name, {"created": 0, "checks": 0, "replaced": 0, "expired": 0})
        self._entries[name] = _Entry(
            name, factory, stats, check=check, close=close, check_after=float(check_after), max_age=max_age, eager=eager
        )

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(map(repr, self._entries)) or "none"
            raise KeyError(f"no resource named {name!r} (registered: {known})") from None

    def __getitem__(self, name: str) -> Any:
        entry = self._entry(name)
        with entry.lock:
            step = _Steps(entry, self._context._serial)
            for call in step:
                result = call()
                if _is_awaitable(result):
                    _discard(result)
                    raise TypeError(
                        f"resource {name!r} has an async factory, check or close: use `await resources.aget({name!r})`"
                    )
                step.send_result(result)
            return entry.obj

    async def aget(self, name: str) -> Any:
        """Like `resources[name]`, but awaits async factories, checks and closers."""
        import asyncio

        entry = self._entry(name)
        if entry.alock is None:
            entry.alock = asyncio.Lock()
        from .current import _current

        async with entry.alock:
            step = _Steps(entry, self._context._serial, asynchronous=True)
            # The object outlives this invocation: tasks it starts (a pool's maintenance task, say)
            # are not background work of the invocation that happened to create it.
            token = _current.set(None)  # type: ignore[arg-type]
            try:
                for call in step:
                    result = call()
                    if _is_awaitable(result):
                        result = await result
                    step.send_result(result)
            finally:
                _current.reset(token)
            return entry.obj

    def invalidate(self, name: str) -> None:
        """Close and forget the current object now; the next access creates a new one."""
        entry = self._entry(name)
        with entry.lock:
            if entry.present:
                obj, entry.obj, entry.present = entry.obj, None, False
                if entry.pid == _pid:
                    result = _close_call(entry, obj)()
                    if _is_awaitable(result):
                        _discard(result)
                        logger.warning("resource %r has an async closer; invalidate() could not await it", name)

    def _created(self) -> list[_Entry]:
        return [entry for entry in self._entries.values() if entry.present]

    def _eager(self) -> list[str]:
        return [name for name, entry in self._entries.items() if entry.eager and not entry.present]

    def _closers(self, prefer_async: bool) -> list[tuple[Callable[[], Any], int]]:
        """(close call, creating thread) for every live object, newest first; the objects are forgotten."""
        closers = []
        for entry in sorted(self._created(), key=lambda e: e.created_at, reverse=True):
            obj, entry.obj, entry.present = entry.obj, None, False
            if entry.pid == _pid:
                closers.append((_close_call(entry, obj, prefer_async), entry.thread))
        return closers


class _Steps:
    """The decisions of one resource access, as calls the sync and async paths run their own way.

    Iterating yields the next call to make (check, close, factory); `send_result` feeds its result.
    """

    def __init__(self, entry: _Entry, serial: int, asynchronous: bool = False) -> None:
        self.entry = entry
        self.serial = serial
        self.asynchronous = asynchronous
        self._pending: Callable[[Any], None] | None = None

    def __iter__(self) -> Iterator[Callable[[], Any]]:
        entry = self.entry
        now = time.monotonic()
        if entry.present:
            if entry.pid != _pid:
                # Created before a fork: the parent still owns it, so drop it without closing.
                entry.obj, entry.present = None, False
            elif entry.max_age is not None and now - entry.created_at >= entry.max_age:
                entry.stats["expired"] += 1
                yield from self._replace()
            elif (
                entry.check is not None
                and entry.checked_serial != self.serial
                and now - entry.last_used >= entry.check_after
            ):
                entry.checked_serial = self.serial
                entry.stats["checks"] += 1
                healthy = yield from self._guarded(entry.check, entry.obj)
                if not healthy:
                    logger.info("resource %r failed its check; replacing it", entry.name)
                    entry.stats["replaced"] += 1
                    yield from self._replace()
        if not entry.present:
            obj = yield from self._result_of(entry.factory)
            entry.obj, entry.present, entry.pid, entry.thread = obj, True, _pid, threading.get_ident()
            entry.created_at = time.monotonic()
            entry.checked_serial = self.serial
            entry.stats["created"] += 1
        entry.last_used = time.monotonic()

    def _result_of(self, fn: Callable[..., Any], *args: Any) -> Generator[Callable[[], Any], None, Any]:
        box: list[Any] = []
        self._pending = box.append
        yield lambda: fn(*args)
        return box[0]

    def _guarded(self, check: Callable[[Any], Any], obj: Any) -> Generator[Callable[[], Any], None, bool]:
        box: list[Any] = []
        self._pending = box.append

        def run() -> Any:
            try:
                return check(obj)
            except Exception as exc:
                logger.info("resource %r check raised %r", self.entry.name, exc)
                return False

        yield run
        result = box[0]
        return result is not False

    def _replace(self) -> Generator[Callable[[], Any], None, None]:
        entry = self.entry
        obj, entry.obj, entry.present = entry.obj, None, False
        yield from self._result_of(_close_call(entry, obj, self.asynchronous))

    def send_result(self, result: Any) -> None:
        if self._pending is not None:
            self._pending(result)
            self._pending = None


def _close_call(entry: _Entry, obj: Any, prefer_async: bool = False) -> Callable[[], Any]:
    """A call that closes `obj`, logging (never raising) what goes wrong."""
    names = ("aclose", "close") if prefer_async else ("close", "aclose")

    def close() -> Any:
        try:
            if entry.close is not None:
                result = entry.close(obj)
            else:
                method = next((m for m in map(lambda n: getattr(obj, n, None), names) if callable(m)), None)
                if method is None:
                    return None
                result = method()
        except Exception:
            logger.warning("closing resource %r failed", entry.name, exc_info=True)
            return None
        if _is_awaitable(result):
            return _logged(entry.name, result)
        return result

    return close


async def _logged(name: str, awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        logger.warning("closing resource %r failed", name, exc_info=True)


def _discard(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()
