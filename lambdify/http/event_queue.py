"""`Event` invocations: accepted with a 202, run in the background, retried as Lambda retries
asynchronous invocations, and never lost silently.

As on Lambda, a failed invocation (the handler raised, timed out, ran out of memory, or INIT
failed) runs again up to `max_retry_attempts` more times, the first `retry_delay` seconds later,
each next one twice as long; a throttled one is tried again with a short backoff. A retry that
would come due more than `max_event_age` seconds after the event was accepted is not made.
An event given up is logged whole, on one ERROR line, and handed to `on_failure(event, error)`.

At shutdown, queued and running events still get `shutdown_grace`; a retry not yet due is not
waited for (it could be minutes away): it is given up at once, logged and handed to `on_failure`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import time
from typing import TYPE_CHECKING, Any

from ..core.engine import is_async
from ..core.errors import FunctionError, LambdifyError, TooManyRequests
from ..core.invoke_async import run_async
from ..core.logs import logger

if TYPE_CHECKING:
    from ..core.engine import Engine

_THROTTLE_BACKOFF = (0.01, 1.0)  # first and longest wait before trying a throttled event again


class _Event:
    """One accepted event and what happened to it so far."""

    __slots__ = ("accepted", "attempts", "error", "function", "request_id", "text")

    def __init__(self, function: Engine, text: str, request_id: str) -> None:
        self.function = function
        self.text = text  # every attempt gets the event as accepted, whatever the handler did to it
        self.request_id = request_id  # (Lambda keeps the request id across retries)
        self.accepted = time.monotonic()
        self.attempts = 0
        self.error: LambdifyError | None = None


class EventQueue:
    """`Event` invocations accepted with a 202 and run in the background, never dropped silently.

    Bounded (`max_queued`, retries waiting included); each function runs at most `max_contexts`
    of them at a time.
    """

    def __init__(self, max_queued: int) -> None:
        self.max_queued = max_queued
        self.tasks: dict[asyncio.Task[None], str] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._closing = False
        self._wakers: set[asyncio.Future[bool]] = set()

    def submit(self, function: Engine, event: Any, request_id: str) -> bool:
        if len(self.tasks) >= self.max_queued:
            return False
        item = _Event(function, json.dumps(event), request_id)
        # A fresh context: the event must not count as background work of whatever invocation
        # (e.g. a wrapping middleware's) happens to be current here.
        task = asyncio.get_running_loop().create_task(self._run(item, event), context=contextvars.Context())
        self.tasks[task] = f"{function.config.name} RequestId: {request_id}"
        task.add_done_callback(self.tasks.pop)
        return True

    async def _run(self, item: _Event, event: Any) -> None:
        config = item.function.config
        limit = self._limits.get(config.name)
        if limit is None:
            limit = self._limits[config.name] = asyncio.Semaphore(config.max_contexts or 1_000_000)
        backoff = _THROTTLE_BACKOFF[0]
        try:
            while True:
                try:
                    async with limit:
                        await run_async(item.function, event, item.request_id)
                    return
                except TooManyRequests as error:
                    # Lambda retries throttled events for up to max_event_age, not counting them as attempts.
                    item.error = error
                    if self._too_old(item, backoff):
                        await self._give_up(item, f"throttled until max_event_age ({config.max_event_age:g} s)")
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _THROTTLE_BACKOFF[1])
                    continue
                except Exception as error:
                    item.attempts += 1
                    item.error = error if isinstance(error, LambdifyError) else _as_function_error(error)
                reason = await self._wait_for_retry(item)
                if reason:
                    await self._give_up(item, reason)
                    return
                event = json.loads(item.text)
        except asyncio.CancelledError:
            logger.error(
                "Event invocation %s of %s was cancelled at shutdown (shutdown_grace passed) in attempt %d; event: %s",
                item.request_id,
                config.name,
                item.attempts + 1,
                item.text,
            )
            raise

    async def _wait_for_retry(self, item: _Event) -> str:
        """Wait until the next retry is due; or say why there is none ("" when it is due)."""
        config = item.function.config
        retries = item.attempts - 1
        if retries >= config.max_retry_attempts:
            return f"max_retry_attempts ({config.max_retry_attempts}) reached"
        delay = config.retry_delay * 2**retries
        if self._too_old(item, delay):
            return f"its next retry, due in {delay:g} s, would pass max_event_age ({config.max_event_age:g} s)"
        if self._closing:
            return f"dropped at shutdown: its next retry was due in {delay:g} s"
        logger.warning(
            "Event invocation %s of %s failed (attempt %d of %d): %s; retrying in %g s",
            item.request_id,
            config.name,
            item.attempts,
            config.max_retry_attempts + 1,
            _describe(item.error),
            delay,
        )
        loop = asyncio.get_running_loop()
        waker: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_later(delay, _wake, waker, False)
        self._wakers.add(waker)
        try:
            if await waker:
                return f"dropped at shutdown: its next retry was due in {timer.when() - loop.time():.3g} s"
            return ""
        finally:
            timer.cancel()
            self._wakers.discard(waker)

    def _too_old(self, item: _Event, delay: float) -> bool:
        return time.monotonic() - item.accepted + delay > item.function.config.max_event_age

    async def _give_up(self, item: _Event, reason: str) -> None:
        """One ERROR line holding the whole event, then `on_failure(event, error)`; nothing raised."""
        config = item.function.config
        logger.error(
            "Event invocation %s of %s given up after %d attempt(s), %s; last error %s; event: %s",
            item.request_id,
            config.name,
            item.attempts,
            reason,
            _describe(item.error),
            item.text,
        )
        on_failure = config.on_failure
        if on_failure is None:
            return
        try:
            event = json.loads(item.text)
            if is_async(on_failure):
                outcome = on_failure(event, item.error)
            else:
                outcome = await asyncio.to_thread(on_failure, event, item.error)  # it may block (a queue's client)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            logger.exception("on_failure of %s raised for Event invocation %s", config.name, item.request_id)

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for queued events; give up retries not yet due; name every
        event that could not finish."""
        self._closing = True
        try:
            for waker in list(self._wakers):
                _wake(waker, True)
            if not self.tasks:
                return
            done, pending = await asyncio.wait(list(self.tasks), timeout=grace)
            for task in pending:
                logger.error("shutdown grace passed; cancelling unfinished Event invocation %s", self.tasks.get(task))
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        finally:
            self._closing = False  # (a FunctionApp can be started again: a test client, a second lifespan)


def _wake(waker: asyncio.Future[bool], closing: bool) -> None:
    if not waker.done():
        waker.set_result(closing)


def _describe(error: BaseException | None) -> str:
    if isinstance(error, FunctionError):
        return str(error)  # "error_type: message", as Lambda's error payload has them
    return f"{type(error).__name__}: {error}"


def _as_function_error(error: Exception) -> FunctionError:
    return FunctionError(type(error).__name__, str(error))
