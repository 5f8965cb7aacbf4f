"""Running one invocation's task on the environment's loop from the runtime's thread, cheaply.

`loop.run_until_complete` costs a `run_forever` set-up and two turns of the loop (each an
`epoll` call) per event, more than a small ASGI app takes to answer. Most requests never wait
on anything: their task's first step is the whole request. So the task's first step runs
right here, as the loop would run it (the loop set as running, its async-generator hooks
installed); only a task that is still waiting after that step is handed to
`run_until_complete`.

The environment's loop (`new_loop`) is asyncio's selector loop that lets `run_task` take a new
task's first step instead of scheduling it: no `Handle` is made, queued and popped per event.
Any other loop (an event loop policy of the user's, uvloop) gets the same first step through
its ready queue, or `run_until_complete` where that is not asyncio's own.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any

__all__ = ["new_loop", "run_task"]


class _EnvironmentLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop, whose next `call_soon` can be taken by `run_task` (a task's first step)."""

    def __init__(self) -> None:
        super().__init__()
        self._taking = False
        self._taken: Callable[..., Any] | None = None  # the first step of the task being made
        self._unused = asyncio.Handle(_nothing, (), self)  # what a taken `call_soon` returns
        self._hooks = (self._asyncgen_firstiter_hook, self._asyncgen_finalizer_hook)  # type: ignore[attr-defined]
        self._previous_hooks: Any = None
        self._hooked_thread: int | None = None  # the thread where `_hooks` were installed

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: Context | None = None
    ) -> asyncio.Handle:
        if self._taking and not args:
            self._taking = False
            self._taken = callback  # (to run in the task's context, the one `run_task` gave it)
            return self._unused
        return super().call_soon(callback, *args, context=context)

    def _install_hooks(self, thread: int) -> None:
        """The loop's async-generator hooks, on this (the runtime's) thread for the environment's
        life rather than set and reset per event; the previous ones come back when the loop closes."""
        self._hooked_thread = thread
        if self._previous_hooks is None:
            self._previous_hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(*self._hooks)

    def close(self) -> None:
        previous = self._previous_hooks
        if previous is not None and sys.get_asyncgen_hooks().firstiter is self._hooks[0]:
            sys.set_asyncgen_hooks(*previous)
        super().close()


def _nothing() -> None:
    pass


def new_loop() -> asyncio.AbstractEventLoop:
    """The loop of an environment: ours, unless an event loop policy (uvloop's, say) chooses another."""
    if type(asyncio.get_event_loop_policy()) is asyncio.DefaultEventLoopPolicy and sys.platform != "win32":
        return _EnvironmentLoop()
    return asyncio.new_event_loop()


_Task = asyncio.Task
_get_ident = threading.get_ident
_get_running_loop = asyncio._get_running_loop
_set_running_loop = asyncio._set_running_loop


def run_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], context: Context) -> Any:
    """Run `coro` as a task on `loop` (not running) until done, in `context`; return its result."""
    if type(loop) is _EnvironmentLoop and not loop._ready and _get_running_loop() is None:  # type: ignore[attr-defined]
        # The first step, taken here: the task's `call_soon` hands it over instead of queueing it.
        loop._taking = True
        task = _Task(coro, loop=loop, context=context)
        step = loop._taken
        loop._taken = None
        if step is None:  # pragma: no cover - a Task always schedules its first step
            loop._taking = False
            return loop.run_until_complete(task)
        thread = _get_ident()
        if loop._hooked_thread != thread:
            loop._install_hooks(thread)
        _set_running_loop(loop)
        loop._thread_id = thread  # type: ignore[attr-defined]
        try:
            context.run(step)
        finally:
            loop._thread_id = None  # type: ignore[attr-defined]
            _set_running_loop(None)
        if task.done() and not loop._ready:  # type: ignore[attr-defined]
            return task.result()
        return loop.run_until_complete(task)
    ready = getattr(loop, "_ready", None)
    if ready or ready is None or not isinstance(loop, asyncio.BaseEventLoop) or asyncio._get_running_loop() is not None:
        return loop.run_until_complete(loop.create_task(coro, context=context))
    # (Made as a Task, not through the loop's task factory: lambdify's factory would count this task
    # as one its invocation left running, and that check is a cost per event too.)
    task = asyncio.Task(coro, loop=loop, context=context)
    if len(ready) == 1:  # the task's first step, just scheduled: nothing else is waiting
        handle = ready.popleft()
        hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=loop._asyncgen_firstiter_hook, finalizer=loop._asyncgen_finalizer_hook)  # type: ignore[attr-defined]
        asyncio._set_running_loop(loop)
        loop._thread_id = threading.get_ident()  # type: ignore[attr-defined]
        try:
            handle._run()
        finally:
            loop._thread_id = None  # type: ignore[attr-defined]
            asyncio._set_running_loop(None)
            sys.set_asyncgen_hooks(*hooks)
        if task.done() and not ready:
            return task.result()
    return loop.run_until_complete(task)
