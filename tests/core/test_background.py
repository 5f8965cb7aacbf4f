"""Background work finishes before the invocation does (DESIGN.md §4)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from lambdify import Function, FunctionError, InvocationTimeout, LambdaContext, current_context, handler


async def _append_later(log: list[str], item: str) -> None:
    await asyncio.sleep(0.01)
    log.append(item)


def _append_slowly(log: list[str], item: str) -> None:
    time.sleep(0.01)
    log.append(item)


def _spin(stop: threading.Event, seconds: float = 30.0) -> None:
    # Short sleeps, so that an abandoned thread unwinds soon after the deadline.
    end = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < end:
        time.sleep(0.01)


# -- every deferred item has run when the invocation returns --------------------------------


def test_every_deferred_item_has_run_when_invoke_returns() -> None:
    done: list[int] = []

    @handler
    def fn(event: dict[str, Any], context: LambdaContext) -> int:
        context.defer(done.append, event["i"])
        return int(event["i"])

    try:
        behind = []
        for i in range(1000):
            assert fn.invoke({"i": i}) == i
            if len(done) != i + 1:
                behind.append(i)
        count = len(done)
    finally:
        fn.shutdown()

    assert behind == []
    assert count == 1000
    assert done == list(range(1000))


@pytest.mark.anyio
async def test_every_deferred_coroutine_has_run_when_ainvoke_returns() -> None:
    done: list[int] = []

    async def record(i: int) -> None:
        await asyncio.sleep(0)
        done.append(i)

    @handler
    async def fn(event: dict[str, Any], context: LambdaContext) -> int:
        context.defer(record(event["i"]))
        return int(event["i"])

    try:
        behind = []
        for i in range(200):
            assert await fn.ainvoke({"i": i}) == i
            if len(done) != i + 1:
                behind.append(i)
        count = len(done)
    finally:
        await fn.ashutdown()

    assert behind == []
    assert count == 200
    assert done == list(range(200))


# -- order: registration order, after the handler returned or raised ------------------------


def _ordered_function(kind: str, raises: bool, log: list[str]) -> Function[Any]:
    if kind == "sync":

        @handler
        def sync_fn(event: dict[str, Any], context: LambdaContext) -> str:
            context.defer(_append_slowly, log, "deferred 0")
            context.defer(_append_later(log, "deferred 1"))
            context.defer(log.append, "deferred 2")
            log.append("handler done")
            if raises:
                raise ValueError("boom")
            return "ok"

        return sync_fn

    @handler
    async def async_fn(event: dict[str, Any], context: LambdaContext) -> str:
        context.defer(_append_slowly, log, "deferred 0")
        context.defer(_append_later(log, "deferred 1"))
        context.defer(log.append, "deferred 2")
        await asyncio.sleep(0)
        log.append("handler done")
        if raises:
            raise ValueError("boom")
        return "ok"

    return async_fn


_ORDER_CASES = [
    pytest.param("sync", False, id="sync-returned"),
    pytest.param("sync", True, id="sync-raised"),
    pytest.param("async", False, id="async-returned"),
    pytest.param("async", True, id="async-raised"),
]
_IN_ORDER = ["handler done", "deferred 0", "deferred 1", "deferred 2"]


@pytest.mark.parametrize(("kind", "raises"), _ORDER_CASES)
def test_deferred_items_run_in_order_after_the_handler_via_invoke(kind: str, raises: bool) -> None:
    log: list[str] = []
    fn = _ordered_function(kind, raises, log)
    try:
        if raises:
            with pytest.raises(FunctionError) as caught:
                fn.invoke({})
            assert caught.value.error_type == "ValueError"
            assert caught.value.error_message == "boom"
        else:
            assert fn.invoke({}) == "ok"
        seen = list(log)
    finally:
        fn.shutdown()

    assert seen == _IN_ORDER


@pytest.mark.anyio
@pytest.mark.parametrize(("kind", "raises"), _ORDER_CASES)
async def test_deferred_items_run_in_order_after_the_handler_via_ainvoke(kind: str, raises: bool) -> None:
    log: list[str] = []
    fn = _ordered_function(kind, raises, log)
    try:
        if raises:
            with pytest.raises(FunctionError) as caught:
                await fn.ainvoke({})
            assert caught.value.error_type == "ValueError"
        else:
            assert await fn.ainvoke({}) == "ok"
        seen = list(log)
    finally:
        await fn.ashutdown()

    assert seen == _IN_ORDER


# -- a failing deferred item is logged and counted, and the result still returned ------------


def _raise_value_error() -> None:
    raise ValueError("deferred boom")


async def _araise_value_error() -> None:
    await asyncio.sleep(0)
    raise ValueError("deferred boom")


@pytest.mark.parametrize(
    "kind",
    [pytest.param("sync", id="sync-handler-sync-item"), pytest.param("async", id="async-handler-coroutine")],
)
def test_failing_deferred_item_is_logged_and_counted(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="lambdify")
    after: list[str] = []
    fn: Function[Any]
    if kind == "sync":

        @handler
        def fn(event: dict[str, Any], context: LambdaContext) -> str:
            context.defer(_raise_value_error)
            context.defer(after.append, "next item ran")
            return context.aws_request_id

    else:

        @handler
        async def fn(event: dict[str, Any], context: LambdaContext) -> str:
            context.defer(_araise_value_error())
            context.defer(after.append, "next item ran")
            return context.aws_request_id

    try:
        request_id = fn.invoke({})
        stats = fn.stats()
    finally:
        fn.shutdown()

    assert after == ["next item ran"]
    assert stats["deferred_errors"] == 1
    assert stats["errors"] == 0
    failures = [r for r in caplog.records if r.name == "lambdify" and r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert request_id in failures[0].getMessage()
    assert "deferred boom" in failures[0].getMessage()


@pytest.mark.anyio
async def test_failing_deferred_coroutine_is_logged_and_counted_via_ainvoke(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="lambdify")

    @handler
    async def fn(event: dict[str, Any], context: LambdaContext) -> str:
        context.defer(_araise_value_error())
        return context.aws_request_id

    try:
        request_id = await fn.ainvoke({})
        stats = fn.stats()
    finally:
        await fn.ashutdown()

    assert stats["deferred_errors"] == 1
    failures = [r for r in caplog.records if r.name == "lambdify" and r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert request_id in failures[0].getMessage()


# -- the deadline covers deferred work ------------------------------------------------------


@pytest.mark.parametrize("kind", [pytest.param("sync", id="sync-handler"), pytest.param("async", id="async-handler")])
def test_deferred_work_past_the_deadline_times_out_and_retires_the_context(kind: str) -> None:
    stop = threading.Event()
    handler_returned: list[bool] = []
    fn: Function[Any]
    if kind == "sync":

        @handler(timeout=0.5)
        def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
            if event.get("slow"):
                context.defer(_spin, stop)
            handler_returned.append(True)
            return {"cold_start": context.cold_start, "ctx": context.execution.id}

    else:

        @handler(timeout=0.5)
        async def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
            if event.get("slow"):
                context.defer(asyncio.sleep(30))
            handler_returned.append(True)
            return {"cold_start": context.cold_start, "ctx": context.execution.id}

    try:
        first = fn.invoke({})
        assert first["cold_start"] is True
        started = time.monotonic()
        with pytest.raises(InvocationTimeout) as caught:
            fn.invoke({"slow": True})
        elapsed = time.monotonic() - started
        stop.set()
        after = fn.invoke({})
        stats = fn.stats()
    finally:
        stop.set()
        fn.shutdown()

    assert handler_returned == [True, True, True]
    assert caught.value.error_type == "Sandbox.Timedout"
    assert elapsed < 10
    assert after["cold_start"] is True
    assert after["ctx"] != first["ctx"]
    assert stats["timeouts"] == 1
    assert stats["contexts_retired"] >= 1


@pytest.mark.anyio
async def test_deferred_coroutine_past_the_deadline_times_out_via_ainvoke() -> None:
    cancelled: list[bool] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    @handler(timeout=0.5)
    async def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if event.get("slow"):
            context.defer(forever())
        return {"cold_start": context.cold_start, "ctx": context.execution.id}

    try:
        first = await fn.ainvoke({})
        with pytest.raises(InvocationTimeout):
            await fn.ainvoke({"slow": True})
        after = await fn.ainvoke({})
    finally:
        await fn.ashutdown()

    assert cancelled == [True]
    assert after["cold_start"] is True
    assert after["ctx"] != first["ctx"]


# -- sync deferred work in an async handler runs off the event loop -------------------------


@pytest.mark.anyio
async def test_sync_deferred_callable_of_async_handler_runs_off_the_loop_via_ainvoke() -> None:
    idents: dict[str, int] = {}

    def record() -> None:
        idents["deferred"] = threading.get_ident()

    @handler
    async def fn(event: dict[str, Any], context: LambdaContext) -> None:
        idents["handler"] = threading.get_ident()
        context.defer(record)

    try:
        await fn.ainvoke({})
    finally:
        await fn.ashutdown()

    assert idents["handler"] == threading.get_ident()  # ainvoke: the caller's loop
    assert idents["deferred"] != idents["handler"]


def test_sync_deferred_callable_of_async_handler_runs_off_the_loop_via_invoke() -> None:
    idents: dict[str, int] = {}

    def record() -> None:
        idents["deferred"] = threading.get_ident()

    @handler
    async def fn(event: dict[str, Any], context: LambdaContext) -> None:
        idents["handler"] = threading.get_ident()
        context.defer(record)

    try:
        fn.invoke({})
    finally:
        fn.shutdown()

    assert idents["handler"] != threading.get_ident()  # invoke: lambdify's own loop
    assert idents["deferred"] != idents["handler"]


# -- misuse of defer -------------------------------------------------------------------------


async def _nothing() -> None:
    pass


def _misuse(context: LambdaContext, kept: list[LambdaContext]) -> dict[str, str]:
    outcome: dict[str, str] = {}
    coro = _nothing()
    try:
        context.defer(coro, "extra")
    except TypeError:
        outcome["awaitable with an argument"] = "TypeError"
    finally:
        coro.close()
    try:
        context.defer(42)
    except TypeError:
        outcome["not callable"] = "TypeError"
    kept.append(context)
    return outcome


_EXPECTED_MISUSE = {"awaitable with an argument": "TypeError", "not callable": "TypeError"}


def test_defer_rejects_bad_arguments_and_late_calls_sync() -> None:
    kept: list[LambdaContext] = []

    @handler
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
        return _misuse(context, kept)

    try:
        outcome = fn.invoke({})
        with pytest.raises(RuntimeError):
            kept[0].defer(print)
    finally:
        fn.shutdown()

    assert outcome == _EXPECTED_MISUSE


@pytest.mark.anyio
async def test_defer_rejects_bad_arguments_and_late_calls_async() -> None:
    kept: list[LambdaContext] = []

    @handler
    async def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
        return _misuse(context, kept)

    try:
        outcome = await fn.ainvoke({})
        with pytest.raises(RuntimeError):
            kept[0].defer(print)
    finally:
        await fn.ashutdown()

    assert outcome == _EXPECTED_MISUSE


# -- asyncio tasks the handler left running --------------------------------------------------


def _stray_function(log: list[str], **options: Any) -> Function[Any]:
    async def side_effect(started: asyncio.Event) -> None:
        started.set()
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        log.append("task finished")

    @handler(**options)
    async def fn(event: dict[str, Any], context: LambdaContext) -> str:
        started = asyncio.Event()
        asyncio.create_task(side_effect(started))  # left running on purpose
        await started.wait()  # the task is inside its body, where it can see a cancellation
        return "returned"

    return fn


_STRAY_POLICIES = [
    pytest.param({}, ["task finished"], id="default-awaits"),
    pytest.param({"stray_tasks": "await"}, ["task finished"], id="await"),
    pytest.param({"stray_tasks": "cancel"}, ["cancelled"], id="cancel"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("options", "expected"), _STRAY_POLICIES)
async def test_stray_tasks_are_dealt_with_before_ainvoke_returns(options: dict[str, Any], expected: list[str]) -> None:
    log: list[str] = []
    fn = _stray_function(log, **options)
    try:
        assert await fn.ainvoke({}) == "returned"
        seen = list(log)
    finally:
        await fn.ashutdown()

    assert seen == expected


@pytest.mark.parametrize(("options", "expected"), _STRAY_POLICIES)
def test_stray_tasks_are_dealt_with_before_invoke_returns(options: dict[str, Any], expected: list[str]) -> None:
    log: list[str] = []
    fn = _stray_function(log, **options)
    try:
        assert fn.invoke({}) == "returned"
        seen = list(log)
    finally:
        fn.shutdown()

    assert seen == expected


@pytest.mark.anyio
async def test_stray_task_with_warn_policy_is_logged_and_left_running(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="lambdify")
    gate = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []

    @handler(stray_tasks="warn")
    async def fn(event: dict[str, Any], context: LambdaContext) -> str:
        tasks.append(asyncio.create_task(gate.wait(), name="straggler-task"))
        return "returned"

    try:
        assert await fn.ainvoke({}) == "returned"
        still_running = not tasks[0].done()
    finally:
        gate.set()
        await asyncio.gather(*tasks)
        await fn.ashutdown()

    assert still_running
    warnings = [r for r in caplog.records if r.name == "lambdify" and r.levelno == logging.WARNING]
    assert any("straggler-task" in r.getMessage() for r in warnings)


@pytest.mark.anyio
async def test_stray_task_that_raises_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="lambdify")

    async def explode() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("stray boom")

    @handler
    async def fn(event: dict[str, Any], context: LambdaContext) -> str:
        asyncio.create_task(explode(), name="exploding-task")  # left running on purpose
        return context.aws_request_id

    try:
        request_id = await fn.ainvoke({})
        stats = fn.stats()
    finally:
        await fn.ashutdown()

    assert stats["deferred_errors"] == 1
    assert stats["errors"] == 0
    failures = [r for r in caplog.records if r.name == "lambdify" and r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert request_id in failures[0].getMessage()


def _defers_from_a_stray_task(log: list[str]) -> Function[Any]:
    @handler
    async def fn(event: dict[str, Any], context: LambdaContext) -> str:
        async def later() -> None:
            await asyncio.sleep(0.05)  # after the handler returned: the flush is waiting for this task
            current_context().defer(log.append, "deferred by the task")

        asyncio.create_task(later())  # left running on purpose
        return "returned"

    return fn


@pytest.mark.anyio
async def test_work_a_stray_task_defers_during_the_flush_runs_before_ainvoke_returns() -> None:
    log: list[str] = []
    fn = _defers_from_a_stray_task(log)
    try:
        assert await fn.ainvoke({}) == "returned"
        seen = list(log)
    finally:
        await fn.ashutdown()

    assert seen == ["deferred by the task"]


def test_work_a_stray_task_defers_during_the_flush_runs_before_invoke_returns() -> None:
    log: list[str] = []
    fn = _defers_from_a_stray_task(log)
    try:
        assert fn.invoke({}) == "returned"
        seen = list(log)
    finally:
        fn.shutdown()

    assert seen == ["deferred by the task"]


def test_tasks_a_sync_handler_leaves_on_its_threads_loop_are_waited_for_from_either_caller() -> None:
    # Sync code driving async code on its thread's loop (as Mangum-style code does) leaves a task
    # there: it finishes on that loop, whether the invocation came from invoke() or ainvoke().
    log: list[str] = []

    async def notify() -> None:
        await asyncio.sleep(0.05)
        log.append("notified")

    async def work() -> str:
        asyncio.get_running_loop().create_task(notify())
        return "done"

    @handler(name="drives_its_loop", timeout=2)
    def fn(event: Any, context: LambdaContext) -> Any:
        return asyncio.get_event_loop().run_until_complete(work())

    try:
        assert fn.invoke({}) == "done" and log == ["notified"]
        started = time.monotonic()
        assert asyncio.run(fn.ainvoke({})) == "done" and log == ["notified", "notified"]
        assert time.monotonic() - started < 1.5  # not held to the 2 s deadline
        stats = fn.stats()
        assert stats["invocations"] == 2 and stats["timeouts"] == 0 and stats["errors"] == 0
    finally:
        fn.shutdown()
