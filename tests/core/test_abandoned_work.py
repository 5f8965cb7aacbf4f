"""What a caller gives up, or an exception that is not an `Exception` interrupts, leaves nothing
behind: a cold start's place in the pool, the tasks an invocation left running, SHUTDOWN hooks."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from lambdify import Function, InvocationTimeout, LambdaContext, handler


def test_a_cold_start_its_caller_gave_up_on_frees_its_place(functions: list[Function[Any]]) -> None:
    async def init(ctx: Any) -> None:
        await asyncio.sleep(0.3)  # a slow INIT (connecting to a database)

    @handler(name="slow_init", init=init, max_contexts=1, queue_timeout=1)
    async def fn(event: Any, context: LambdaContext) -> Any:
        return "ok"

    functions.append(fn)

    async def main() -> Any:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fn.ainvoke({}), 0.05)  # gave up during INIT
        return await fn.ainvoke({})  # max_contexts=1: only possible if that place was freed

    assert asyncio.run(main()) == "ok"
    stats = fn.stats()
    assert stats["contexts_alive"] == 1 and stats["contexts_retired"] == 1 and stats["init_errors"] == 0


def test_an_init_interrupted_by_a_keyboard_interrupt_frees_its_place(functions: list[Function[Any]]) -> None:
    calls = [0]

    def init(ctx: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise KeyboardInterrupt("in init")

    @handler(name="interrupted_init", init=init, max_contexts=1, queue_timeout=0.5)
    def fn(event: Any, context: LambdaContext) -> Any:
        return "ok"

    functions.append(fn)
    with pytest.raises(KeyboardInterrupt, match="in init"):  # passed on unchanged
        fn.invoke({})
    assert fn.invoke({}) == "ok"  # INIT again, on a new context
    assert fn.stats()["throttles"] == 0


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_tasks_left_running_are_cancelled_when_the_deadline_passes_while_waiting_for_them(
    functions: list[Function[Any]], how: str
) -> None:
    seen: list[str] = []

    @handler(name=f"stray_{how}", timeout=0.3)
    async def fn(event: Any, context: LambdaContext) -> Any:
        async def background() -> None:
            try:
                await asyncio.sleep(1)
                seen.append("ran on")
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        asyncio.get_running_loop().create_task(background())
        return "ok"

    functions.append(fn)

    async def from_a_loop() -> None:
        with pytest.raises(InvocationTimeout):
            await fn.ainvoke({})
        await asyncio.sleep(1.2)  # the loop runs on, as a server's would

    if how == "ainvoke":
        asyncio.run(from_a_loop())
    else:
        with pytest.raises(InvocationTimeout):
            fn.invoke({})
        time.sleep(1.2)
    assert seen == ["cancelled"]


def test_a_failing_async_deferred_item_of_a_sync_handler_counts_once(
    functions: list[Function[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    async def fails() -> None:
        raise ValueError("deferred failed")

    @handler(name="defers_failing")
    def fn(event: Any, context: LambdaContext) -> Any:
        context.defer(fails)
        return "ok"

    functions.append(fn)
    with caplog.at_level(logging.ERROR, logger="lambdify"):
        assert fn.invoke({}) == "ok"
    assert fn.stats()["deferred_errors"] == 1
    assert len([r for r in caplog.records if "deferred failed" in r.getMessage()]) == 1


def test_async_shutdown_hooks_run_when_the_loop_of_their_context_has_ended(functions: list[Function[Any]]) -> None:
    ran: list[str] = []

    def init(ctx: Any) -> None:
        async def close_client() -> None:
            ran.append(ctx.id)

        ctx.on_shutdown(close_client)

    @handler(name="hooked", init=init)
    async def fn(event: Any, context: LambdaContext) -> Any:
        return context.execution.id

    functions.append(fn)
    first = asyncio.run(fn.ainvoke({}))
    second = asyncio.run(fn.ainvoke({}))  # the first loop is closed: its context retires (from this loop)

    async def teardown() -> None:  # as a pytest-asyncio fixture would
        await fn.ashutdown()

    asyncio.run(teardown())
    assert sorted(ran) == sorted([first, second])


def test_shutdown_returns_after_the_shutdown_hooks_have_run(functions: list[Function[Any]]) -> None:
    ran: list[str] = []

    def init(ctx: Any) -> None:
        ctx.on_shutdown(lambda: ran.append(ctx.id))

    @handler(name="waited_for", init=init)
    async def fn(event: Any, context: LambdaContext) -> Any:
        return context.execution.id

    functions.append(fn)
    for _ in range(10):
        context_id = fn.invoke({})
        fn.shutdown()
        assert ran[-1:] == [context_id]


def test_an_invocation_whose_caller_was_cancelled_is_counted(functions: list[Function[Any]]) -> None:
    import lambdify

    @handler(name="cancelled_midway", timeout=5)
    async def fn(event: Any, context: LambdaContext) -> Any:
        await asyncio.sleep(event["sleep"])
        return "ok"

    functions.append(fn)

    async def main() -> None:
        await fn.ainvoke({"sleep": 0})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fn.ainvoke({"sleep": 1}), 0.1)  # ran 0.1 s, then its caller went
        await fn.ainvoke({"sleep": 0})

    asyncio.run(main())
    stats = fn.stats()
    assert (stats["invocations"], stats["cold_starts"], stats["warm_starts"]) == (3, 1, 2)
    assert stats["errors"] == 0 and stats["timeouts"] == 0
    recent = lambdify.stats()["cancelled_midway"]["recent"]
    assert [entry["outcome"] for entry in recent] == ["success", "cancelled", "success"]


def test_shutdown_hooks_run_when_a_system_exit_ends_the_loop_of_the_retired_context(
    functions: list[Function[Any]],
) -> None:
    ran: list[str] = []

    def init(ctx: Any) -> None:
        ctx.on_shutdown(lambda: ran.append("shutdown hook"))

    def stop() -> None:
        raise SystemExit(3)

    @handler(name="exits_in_deferred", init=init)
    async def fn(event: Any, context: LambdaContext) -> Any:
        context.defer(stop)
        return "ok"

    functions.append(fn)
    with pytest.raises(SystemExit):
        asyncio.run(fn.ainvoke({}))  # the retirement's task on that loop never gets to run
    deadline = time.monotonic() + 5
    while not ran and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ran == ["shutdown hook"] and fn.stats()["contexts_retired"] == 1
