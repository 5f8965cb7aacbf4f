"""Execution contexts: one warm environment of a function (its INIT, state, resources, scratch
directory, thread and loop, SHUTDOWN). The per-invocation `LambdaContext` is in `lambda_context`."""

from __future__ import annotations

import os
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from .resources import Resources, _is_awaitable

if TYPE_CHECKING:
    import asyncio
    from pathlib import Path

    from ..isolation.thread import Worker
    from .engine import Engine

__all__ = ["ExecutionContext"]


class ExecutionContext:
    """One warm environment of a Function, kept per worker process and reused across invocations.

    It holds what INIT built (`state`, `resources`), a private scratch directory (`tmp`) and
    shutdown hooks. All of its sync code runs on one dedicated thread, its async code on one
    event loop.
    """

    def __init__(self, function: Engine, loop: asyncio.AbstractEventLoop | None) -> None:
        self.id = os.urandom(16).hex()
        self.function_name = function.config.name
        self.created_at = time.time()
        self.invocations = 0
        self.state = SimpleNamespace()
        self.resources = Resources(self, function.resource_stats)
        self.provisioned = False
        self.init_ms = 0.0
        self.last_ms: float | None = None  # the last invocation's duration (lambdify.stats())
        self.peak_mb: float | None = None  # its own peak memory, where it has its own (a child process)
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]", time.gmtime()) + self.id
        self._function = function
        self._loop = loop
        self._private_loop: asyncio.AbstractEventLoop | None = None
        self._loops: list[asyncio.AbstractEventLoop] = []  # every private loop made (for _drop_thread)
        self._worker: Worker | None = None
        self._tmp: Path | None = None
        self._hooks: list[Callable[[], Any]] = []
        self._target: Callable[..., Any] = function.func
        self._pid = os.getpid()
        self._serial = 0
        self.active = 0
        self.retired = False
        self.idle_since = 0.0
        # A weak reference to what holds this context's invocation open after its handler returned
        # (a WSGI response body not yet read or closed); ended, with a warning, at exit.
        self.holder: Callable[[], Any] | None = None

    def __repr__(self) -> str:
        return f"<ExecutionContext {self.function_name} {self.id[:8]} invocations={self.invocations}>"

    # -- public surface -------------------------------------------------------------------

    @property
    def function(self) -> Any:
        """The `Function` this context belongs to (for a middleware, its engine): `.stats()`, `.name`..."""
        return self._function.owner

    @property
    def tmp(self) -> Path:
        """This context's private scratch directory (mode 0700), created on first use."""
        if self._tmp is None:
            from .scratch import make_scratch_dir

            self._tmp = make_scratch_dir(self.function_name)
        return self._tmp

    def on_shutdown(self, callback: Callable[[], Any]) -> Callable[[], Any]:
        """Run `callback()` (sync or async) once when this context retires; hooks run newest first.

        Usable as a decorator.
        """
        if not callable(callback):
            raise TypeError(f"on_shutdown needs a callable, got {callback!r}")
        self._hooks.append(callback)
        return callback

    # -- where code runs ------------------------------------------------------------------

    @property
    def worker(self) -> Worker:
        """The context's dedicated thread, started on first need."""
        if self._worker is None:
            self._worker = self._function.backend.worker(f"lambdify:{self.function_name}:{self.id[:8]}")
            # A context dropped with its Function (an app that is garbage) closes its thread's loop
            # and stops the thread. (Not at exit: lambdify's exit hook retires live contexts first.)
            weakref.finalize(self, _drop_thread, self._worker, self._loops).atexit = False
            if "asyncio" in sys.modules:
                # Sync code that expects a current event loop (Mangum's asyncio.get_event_loop())
                # finds the context's private loop, as it would find the main thread's on Lambda.
                self._worker.submit(self._set_thread_loop)
        return self._worker

    def _set_thread_loop(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop_here())

    @property
    def has_worker(self) -> bool:
        return self._worker is not None

    def _loop_here(self) -> asyncio.AbstractEventLoop:
        if self._private_loop is None:
            import asyncio

            from .background import install_task_factory

            self._private_loop = asyncio.new_event_loop()
            self._loops.append(self._private_loop)
            install_task_factory(self._private_loop)
        return self._private_loop

    def release_private_loop(self) -> None:
        """Close the private loop of a context whose thread is stuck (unless that thread is running it)."""
        loop = self._private_loop
        if loop is not None and not loop.is_running():
            self._close_private_loop()

    def run_coroutine_here(self, awaitable: Awaitable[Any]) -> Any:
        """Run async code of a loop-less context on its private loop (called on its own thread)."""
        import asyncio

        loop = self._loop_here()
        # A Task made here, not by the loop's task factory: that would count it among the tasks
        # the invocation left running, and its failure twice.
        return loop.run_until_complete(asyncio.Task(_as_coroutine(awaitable), loop=loop))

    def settle(self, value: Any) -> Any:
        """On the context's own thread: a sync result as is, an awaitable run to completion."""
        return self.run_coroutine_here(value) if _is_awaitable(value) else value

    async def acall(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the context's thread from its event loop; awaitable results are awaited here."""
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def done(call: Any) -> None:
            loop.call_soon_threadsafe(_resolve, future, call)

        call = self.worker.submit(fn, *args, on_done=done)
        try:
            result = await future
        except asyncio.CancelledError:
            if self._worker is not None and self._worker.abandon(call, self._function.unwound):
                self._function.count_abandoned()
            raise
        if _is_awaitable(result):
            result = await result
        return result

    # -- lifecycle ------------------------------------------------------------------------

    def _init_steps(self) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        steps: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        function = self._function
        if function.config.init is not None:
            steps.append((function.config.init, (self,)))
        if function.is_class:
            steps.append((self._construct, ()))
        return steps

    def _construct(self) -> None:
        instance = self._function.func(self)
        self._target = instance
        close = getattr(instance, "close", None)
        if callable(close):
            self._hooks.append(close)

    def start(self, timeout: float) -> None:
        """INIT from a sync caller, on the context's thread; `TimeoutError` after `timeout` seconds."""
        self.worker.call(self.init_here, timeout=timeout)

    def abandon_init(self, timeout: TimeoutError) -> bool:
        """Give up on an INIT that timed out; True if a thread was left running it."""
        return self.worker.abandon(timeout.args[0], self._function.unwound)

    def freeze(self) -> None:
        """Stop an idle context's code (process isolation only; threads cannot be stopped)."""

    def thaw(self) -> None:
        """Undo `freeze()` before the context is used again."""

    def cancel_init(self) -> None:
        """An async INIT timed out (its thread, if any, was abandoned already)."""

    def init_here(self) -> None:
        """INIT for a loop-less context, on its own thread."""
        for fn, args in self._init_steps():
            self.settle(fn(*args))
        for name in self.resources._eager():
            self.resources[name]

    async def ainit(self) -> None:
        """INIT for a loop-bound context: sync steps on the context's thread, async ones on the loop."""
        for fn, args in self._init_steps():
            if fn is self._construct or not self._function.is_async:
                await self.acall(fn, *args)
            else:
                result = fn(*args)
                if _is_awaitable(result):
                    await result
        for name in self.resources._eager():
            if self._function.is_async:
                await self.resources.aget(name)
            else:
                await self.acall(self.resources.__getitem__, name)

    def _shutdown_calls(self, prefer_async: bool) -> list[tuple[Callable[[], Any], int]]:
        """Hooks (newest first, for the context's thread) then resource closers (for their creating thread)."""
        worker = self._worker.ident if self._worker is not None and not self._worker.abandoned else None
        hooks = [(hook, worker or 0) for hook in reversed(self._hooks)]
        self._hooks.clear()
        return hooks + self.resources._closers(prefer_async)

    def close_here(self) -> None:
        """SHUTDOWN for a loop-less context, on its own thread (or any thread if it never had one)."""
        for call, _thread in self._shutdown_calls(prefer_async=False):
            try:
                self.settle(call())
            except Exception:
                _log_hook_failure(self, call)
        self._remove_scratch()
        self._close_private_loop()

    def _close_private_loop(self) -> None:
        # Taken before it is closed (no call between the read and the write, so no thread
        # switch either): a stuck context's thread, unwinding, and the pool may both get here.
        loop, self._private_loop = self._private_loop, None
        if loop is not None:
            loop.close()

    async def aclose(self) -> None:
        """SHUTDOWN for a loop-bound context: sync hooks on its thread, async ones on the loop."""
        worker = self._worker.ident if self._worker is not None and not self._worker.abandoned else None
        for call, thread in self._shutdown_calls(prefer_async=True):
            try:
                result = await self.acall(call) if worker is not None and thread == worker else call()
                if _is_awaitable(result):
                    await result
            except Exception:
                _log_hook_failure(self, call)
        self._remove_scratch()
        if self._private_loop is not None and worker is not None:
            # Closed on its thread after what runs there, and not awaited: a caller cancelled
            # meanwhile (the loop shutting down) would otherwise interrupt the close halfway.
            self.worker.submit(self._close_private_loop)
        else:
            self.release_private_loop()

    def _remove_scratch(self) -> None:
        if self._tmp is not None:
            from .scratch import remove_scratch_dir

            remove_scratch_dir(self._tmp)
            self._tmp = None


def _drop_thread(worker: Worker, loops: list[asyncio.AbstractEventLoop]) -> None:
    """A context was garbage-collected without SHUTDOWN: close its private loops on its thread
    (no ResourceWarning for an unclosed loop), then end the thread."""
    import _thread

    def close() -> None:
        for loop in loops:
            if not loop.is_closed() and not loop.is_running():
                loop.close()

    if worker.ident == _thread.get_ident():
        close()
    elif not worker.abandoned:
        worker.submit(close)
    worker.stop()


def _log_hook_failure(ctx: ExecutionContext, call: Callable[[], Any]) -> None:
    from .logs import logger

    logger.warning("%r: shutdown hook %r failed", ctx, call, exc_info=True)


def _resolve(future: asyncio.Future[Any], call: Any) -> None:
    if future.done():
        return
    if call.error is not None:
        future.set_exception(call.error)
    else:
        future.set_result(call.result)


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
