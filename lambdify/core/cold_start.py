"""Cold starts of a pool: a new context made and its INIT run (here, or awaited on the pool's
loop), then handed to the pool; an INIT that fails or passes `init_timeout` becomes the
`InitError` of the invocation that triggered it, and the context is shut down (so is one whose
caller gave up, or whose INIT raised a KeyboardInterrupt or SystemExit, which passes on unchanged). `Pool`
(pool.py) inherits it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import housekeeping
from .errors import InitError, ThreadStartError, stack_trace
from .logs import log_init_start, logger

if TYPE_CHECKING:
    import asyncio
    import threading

    from .config import Config
    from .context import ExecutionContext
    from .engine import Engine
    from .retirement import _Reaper


class ColdStarts:
    """Making a pool's new contexts (a mixin of `Pool`, whose state it uses)."""

    function: Engine
    config: Config
    loop: asyncio.AbstractEventLoop | None
    main_thread: bool
    starting: dict[str, ExecutionContext]
    _lock: threading.Lock
    _reserved: int
    _contexts: dict[str, ExecutionContext]
    _warm: list[ExecutionContext]
    _partial: dict[str, ExecutionContext]
    _reaper: _Reaper
    _freezes: bool
    _idle_for: float

    if TYPE_CHECKING:  # (given by the pool and by Retirement)

        def _pass_room_on(self) -> None: ...

        def _shutdown(self, ctx: ExecutionContext, counted: bool = False) -> None: ...

    def create(self, provisioned: bool = False, request_id: str | None = None) -> ExecutionContext:
        ctx = self._new_context(provisioned)
        try:
            ctx.start(self.config.init_timeout)
        except TimeoutError as timeout:
            self._init_failed(ctx, timeout, request_id, abandoned=ctx.abandon_init(timeout))
        except (Exception, ThreadStartError) as exc:
            self._init_failed(ctx, exc, request_id)
        except BaseException:  # KeyboardInterrupt, SystemExit... raised by INIT: passed on unchanged
            self._discard(ctx)
            raise
        return self._created(ctx)

    async def acreate(self, provisioned: bool = False, request_id: str | None = None) -> ExecutionContext:
        import asyncio

        ctx = self._new_context(provisioned)
        try:
            async with asyncio.timeout(self.config.init_timeout):
                await ctx.ainit()
        except TimeoutError as exc:
            ctx.cancel_init()  # a sync step still running was abandoned (and counted) by acall
            self._init_failed(ctx, exc, request_id)
        except (Exception, ThreadStartError) as exc:
            self._init_failed(ctx, exc, request_id)
        except BaseException:  # the caller gave up (cancelled), or INIT raised KeyboardInterrupt...
            ctx.cancel_init()
            self._discard(ctx)
            raise
        return self._created(ctx)

    def _new_context(self, provisioned: bool) -> ExecutionContext:
        ctx = self.function.backend.context_class(self.function, self.loop)
        if self.main_thread:
            ctx._worker = self.function.backend.main_thread_worker()
        ctx.active = 0 if provisioned else 1
        ctx.provisioned = provisioned
        ctx.init_ms = time.perf_counter()
        self.starting[ctx.id] = ctx  # (INIT runs: shown by lambdify.stats() as "init")
        log_init_start(self.config.name)
        return ctx

    def _created(self, ctx: ExecutionContext) -> ExecutionContext:
        ctx.init_ms = (time.perf_counter() - ctx.init_ms) * 1000
        self.starting.pop(ctx.id, None)
        self.function.cold_started(ctx.init_ms)
        with self._lock:
            self._reserved -= 1
            self._contexts[ctx.id] = ctx
            if ctx.provisioned:
                ctx.idle_since = time.monotonic()
                self._warm.append(ctx)
            elif self.config.concurrency != 1:
                self._partial[ctx.id] = ctx
        if ctx.provisioned and self._freezes:
            housekeeping.schedule(self._reaper, ctx.idle_since + self._idle_for)
        return ctx

    def _init_failed(
        self, ctx: ExecutionContext, exc: BaseException, request_id: str | None, abandoned: bool = False
    ) -> None:
        if isinstance(exc, InitError):
            error = exc
            error.request_id = error.request_id or request_id
        elif isinstance(exc, TimeoutError):
            error = InitError(f"Init timed out after {self.config.init_timeout:.2f} seconds", None, request_id)
        else:
            error = InitError(f"{type(exc).__name__}: {exc}", stack_trace(exc), request_id)
        if abandoned:
            self.function.count_abandoned()
        self.function.count("init_errors")
        logger.error("INIT failed for %s: %s", self.config.name, error.error_message)
        self._discard(ctx)
        raise error from exc

    def _discard(self, ctx: ExecutionContext) -> None:
        """A context whose INIT did not complete: its place in the pool freed, the context shut down."""
        self.starting.pop(ctx.id, None)
        with self._lock:
            self._reserved -= 1
            self._pass_room_on()
        ctx.retired = True
        self._shutdown(ctx)
