"""One request through `ASGIMiddleware`: its LambdaContext, which also follows the response
(`_Call`: how far it got, the answer at the deadline), its invocation taken the general way
(`_Request`), the fast lane of a shared context (`_Lane`), and the answers the middleware gives
for the app (429, 502, 504, out of memory).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..core.errors import LambdifyError, TooManyRequests
from ..core.invocation import _Invocation
from ..core.lambda_context import LambdaContext
from ..core.logs import logger
from ..core.memory import peak_rss_mb
from .function_asgi import send_json

if TYPE_CHECKING:
    from ..core.context import ExecutionContext
    from ..core.engine import Engine
    from ..core.pool import Pool
    from .types import Message, Send


class ResponseCutOff(Exception):
    """The deadline passed after the response had started: the server must close the connection."""


class _Call(LambdaContext):
    """The LambdaContext of one request through the middleware, which also follows its response:
    how far it got (for the answer at the deadline), and the message that ends it."""

    __slots__ = ("_answer", "_answered", "_invocation", "_responding", "_send", "_task", "_timed_out")

    _answer: asyncio.Task[None] | None
    _answered: bool  # the middleware answered for the app: drop what the app sends
    _invocation: _Invocation | None  # with a memory ceiling: checked as the response starts
    _responding: bool  # the app sent http.response.start
    _send: Send
    _task: asyncio.Task[Any]
    _timed_out: bool

    def _follow(self, send: Send, task: asyncio.Task[Any], invocation: _Invocation | None) -> None:
        self._send, self._task, self._invocation, self._answer = send, task, invocation, None
        self._responding = self._timed_out = self._answered = False

    def send_wrapper(self, message: Message) -> Awaitable[None]:
        """The app's `send`: notes how far the response got, checks the memory ceiling at its start.

        A plain function that returns the awaitable to await (the server's own, usually), rather
        than a coroutine of ours wrapped around it: one coroutine less per message.
        """
        if self._answered:
            return _nothing()
        if not self._responding:
            if message["type"] == "http.response.start":
                invocation = self._invocation
                if (
                    invocation is not None
                    and invocation.ceiling is not None
                    and over_ceiling(invocation, invocation.ceiling)
                ):
                    self._answered = self._responding = True
                    self._sending = answer = answer_out_of_memory(self._send, self.aws_request_id)
                    return answer
                self._responding = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            # The response ends: a task the server starts meanwhile (hypercorn's keep-alive timer)
            # is the connection's, not background work of the invocation (see the task factory).
            self._sending = sent = self._send(message)
            return sent
        return self._send(message)

    def sent_whole(self) -> bool:
        """Whether the app's response went out whole (its last body message was sent)."""
        sent = self._sending
        return sent is not None and not self._answered and getattr(sent, "cr_frame", None) is None

    def expire(self) -> None:
        """At the deadline: answer 504 now if the app has not started its response, and cancel it."""
        self._timed_out = True
        if not self._responding:
            self._answered = True
            headers = [id_header(self.aws_request_id)]
            answer = send_json(self._send, 504, {"message": "Endpoint request timed out"}, headers)
            # Its own (empty) context: the answer is not background work of the invocation it ends.
            self._answer = self._task.get_loop().create_task(answer, context=contextvars.Context())
        self._task.cancel()


class _Request(_Invocation):
    """One request's invocation, taken the general way (see `_Lane` for the fast one)."""

    __slots__ = ()
    context_class = _Call
    lc: _Call


class _Lane:
    """The fast path of one middleware on one event loop: its shared context, while it stays in
    service and nothing asks for more than a deadline (no memory ceiling, START lines off, no
    scratch directory to check: `ASGIMiddleware.__call__` checks these before each request).

    A request on the lane skips the pool's hand-out and the generic invocation bookkeeping: one
    LambdaContext, a deadline, the ContextVar, and at its end one stats record and the release.
    Anything else (an error, a timeout, logging on, a scratch directory to check) ends the
    general way, through `_Invocation.around`.
    """

    __slots__ = ("ctx", "pool", "running", "thread", "timeout")

    def __init__(self, function: Engine, pool: Pool, ctx: ExecutionContext) -> None:
        self.pool = pool
        self.ctx = ctx
        self.thread = pool.thread  # (its loop runs in this thread...)
        self.running = pool.loop_running  # (... while this says so)
        self.timeout = function.config.timeout

    @staticmethod
    def fits(function: Engine, pool: Pool) -> bool:
        config = function.config
        return pool.loop is not None and config.concurrency is None and config.memory_mb is None


async def _nothing() -> None:
    pass


async def refuse(send: Send, exc: LambdifyError, request_id: str) -> None:
    """Answer a request that got no context: throttled (429), or its INIT failed (502)."""
    if isinstance(exc, TooManyRequests):
        await send_json(send, 429, {"message": "Too Many Requests"}, [id_header(request_id)])
    else:
        logger.error("RequestId: %s INIT failed: %s", request_id, exc)
        await send_json(send, 502, {"message": "Internal Server Error"}, [id_header(request_id)])


def id_header(request_id: str) -> tuple[bytes, bytes]:
    return (b"x-amzn-requestid", request_id.encode())


def over_ceiling(invocation: _Invocation, ceiling: int) -> bool:
    peak = peak_rss_mb()
    return peak > ceiling and peak > invocation.peak_before


async def answer_out_of_memory(send: Send, request_id: str) -> None:
    await send_json(send, 500, {"message": "Memory limit exceeded"}, [id_header(request_id)])
