"""Running one invocation's task on the environment's loop from the runtime's thread, cheaply.

`loop.run_until_complete` costs a `run_forever` set-up and two turns of the loop (each an
`epoll` call) per event, more than a small ASGI app takes to answer. Most requests never wait
on anything: their task's first step is the whole request. So the task's first step runs
right here, as the loop would run it (the loop set as running, its async-generator hooks
installed); only a task that is still waiting after that step is handed to
`run_until_complete`. Falls back to `run_until_complete` for any loop that is not asyncio's own.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Coroutine
from contextvars import Context
from typing import Any

__all__ = ["run_task"]


def run_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], context: Context) -> Any:
    """Run `coro` as a task on `loop` (not running) until done, in `context`; return its result."""
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
