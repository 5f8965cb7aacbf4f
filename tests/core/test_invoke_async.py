"""`invoke()` of an async handler from sync code: handed to lambdify's own loop, answered at the
deadline even while the handler blocks that loop, throttled when the loop stays blocked."""

from __future__ import annotations

import time
from typing import Any

import pytest

from lambdify import Function, InvocationTimeout, LambdaContext, TooManyRequests, handler


def test_results_and_errors_come_back_to_the_sync_caller(functions: list[Function[Any]]) -> None:
    @handler(name="echo_async")
    async def echo(event: Any, context: LambdaContext) -> Any:
        if event.get("fail"):
            raise ValueError("no")
        return {"got": event, "cold": context.cold_start}

    functions.append(echo)
    assert echo.invoke({"a": 1}) == {"got": {"a": 1}, "cold": True}
    assert echo.invoke({"a": 2}) == {"got": {"a": 2}, "cold": False}
    with pytest.raises(Exception) as raised:
        echo.invoke({"fail": True})
    assert getattr(raised.value, "error_type", None) == "ValueError"


def test_a_handler_blocking_the_loop_is_answered_at_its_deadline(functions: list[Function[Any]]) -> None:
    @handler(name="blocks_loop", timeout=0.3)
    async def blocks(event: Any, context: LambdaContext) -> Any:
        time.sleep(event["sleep"])  # noqa: ASYNC251 - sync code in an async handler: the loop cannot cancel it
        return "done"

    functions.append(blocks)
    started = time.monotonic()
    with pytest.raises(InvocationTimeout):
        blocks.invoke({"sleep": 1.5})
    assert time.monotonic() - started < 1.0  # answered near the 0.3 s deadline, not after the sleep
    time.sleep(1.5)  # the loop runs again
    assert blocks.invoke({"sleep": 0}) == "done"


def test_a_call_that_cannot_start_while_the_loop_is_blocked_is_throttled(functions: list[Function[Any]]) -> None:
    @handler(name="hogs_loop", timeout=5)
    async def hog(event: Any, context: LambdaContext) -> Any:
        time.sleep(event["sleep"])  # noqa: ASYNC251 - blocks the loop on purpose
        return "hogged"

    @handler(name="waits", timeout=5, queue_timeout=0.1, init_timeout=0.1)
    async def waits(event: Any, context: LambdaContext) -> Any:
        return "ran"

    functions += [hog, waits]
    import threading

    hogging = threading.Thread(target=hog.invoke, args=({"sleep": 2.5},))
    hogging.start()
    time.sleep(0.2)  # the loop is now blocked by hog's sleep
    started = time.monotonic()
    with pytest.raises(TooManyRequests, match="blocked"):
        waits.invoke({})
    assert 1.0 < time.monotonic() - started < 2.2  # queue_timeout + init_timeout + 1 s
    hogging.join()
    assert waits.invoke({}) == "ran"


def test_an_invoke_from_inside_an_invocation_is_not_its_background_work(functions: list[Function[Any]]) -> None:
    @handler(name="inner_async")
    async def inner(event: Any, context: LambdaContext) -> Any:
        return "inner"

    @handler(name="outer_sync")
    def outer(event: Any, context: LambdaContext) -> Any:
        return inner.invoke({})

    functions += [inner, outer]
    assert outer.invoke({}) == "inner"
    assert outer.stats()["errors"] == 0 and inner.stats()["invocations"] == 1


def test_the_handler_runs_as_its_own_task_whether_or_not_it_waits(functions: list[Function[Any]]) -> None:
    # The task's first step is taken right where the loop receives the call: the rest must be
    # the loop's usual work (the same task after an await, child tasks waited for, the
    # caller's context variables not leaking in, concurrent callers each answered).
    import asyncio
    import contextvars
    import threading

    seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")

    @handler(name="steps", concurrency=4)
    async def steps(event: Any, context: LambdaContext) -> Any:
        first = asyncio.current_task()
        assert first is not None
        before = seen.get()
        seen.set("handler's")
        if event.get("wait"):
            await asyncio.sleep(0.01)
        finished: list[int] = []

        async def child() -> None:
            await asyncio.sleep(0.01)
            finished.append(event["n"])

        asyncio.get_running_loop().create_task(child())  # background work of this invocation
        context.defer(lambda: None)
        return {"same_task": asyncio.current_task() is first, "seen": before, "n": event["n"], "finished": finished}

    functions.append(steps)
    seen.set("caller's")
    for wait in (False, True):
        result = steps.invoke({"n": 0, "wait": wait})
        assert result["same_task"] and result["seen"] == "unset" and result["n"] == 0
        assert result["finished"] == [0]  # invoke() returned after the child task, not before
    results: list[Any] = []
    callers = [
        threading.Thread(target=lambda n=n: results.append(steps.invoke({"n": n, "wait": n % 2}))) for n in range(8)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert sorted(result["n"] for result in results) == list(range(8))
    assert all(result["finished"] == [result["n"]] for result in results)
    stats = steps.stats()
    assert stats["invocations"] == 10 and stats["errors"] == 0 and stats["deferred_errors"] == 0


class _Escape(BaseException):
    """Not an Exception, like KeyboardInterrupt or SystemExit."""


@pytest.mark.parametrize("escape", [_Escape, SystemExit], ids=["base-exception", "system-exit"])
@pytest.mark.parametrize("kind", ["async", "sync"])
def test_an_exception_that_is_not_an_exception_passes_through_and_retires_the_context(
    functions: list[Function[Any]], kind: str, escape: type[BaseException]
) -> None:
    # As without lambdify: the caller gets it unchanged, from invoke() and ainvoke() alike; the
    # context is retired, and lambdify's own loop keeps serving (a SystemExit must not stop it).
    import asyncio

    def body(event: Any, context: LambdaContext) -> Any:
        if event.get("escape"):
            raise escape("out")
        return context.execution.id

    async def async_body(event: Any, context: LambdaContext) -> Any:
        return body(event, context)

    fn = handler(name=f"escapes_{kind}")(async_body if kind == "async" else body)
    functions.append(fn)
    first = fn.invoke({})
    with pytest.raises(escape) as raised:
        fn.invoke({"escape": True})
    assert raised.type is escape and str(raised.value) == "out"
    second = fn.invoke({})
    assert second != first  # a new context: the one it left was retired

    async def from_a_loop() -> Any:
        with pytest.raises(escape):
            await fn.ainvoke({"escape": True})
        return await fn.ainvoke({})

    assert asyncio.run(from_a_loop()) != second
    stats = fn.stats()
    assert stats["invocations"] == 5 and stats["errors"] == 2 and stats["contexts_retired"] == 2
