"""`aws.stepping`: an invocation's task run on the environment's loop from the runtime's thread,
its first step taken directly (no Handle queued), the rest by the loop."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from typing import Any

import pytest

from lambdify.aws.stepping import new_loop, run_task

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


@pytest.fixture
def loop() -> Any:
    loop = new_loop()
    yield loop
    loop.close()


def test_the_environment_loop_is_asyncio_s_own_selector_loop(loop: Any) -> None:
    assert isinstance(loop, asyncio.SelectorEventLoop)
    assert type(loop).__name__ == "_EnvironmentLoop"


def test_a_first_step_that_finishes_runs_as_a_task_of_the_running_loop(loop: Any) -> None:
    seen: dict[str, Any] = {}

    async def step() -> str:
        seen["loop"] = asyncio.get_running_loop()
        seen["task"] = asyncio.current_task()
        seen["running"] = loop.is_running()
        seen["var"] = var.get()
        return "done"

    context = contextvars.copy_context()
    context.run(var.set, "inside")
    assert run_task(loop, step(), context) == "done"
    assert seen["loop"] is loop
    assert isinstance(seen["task"], asyncio.Task)
    assert seen["running"] is True
    assert seen["var"] == "inside"
    assert var.get() == "unset"  # the caller's context is untouched
    assert asyncio._get_running_loop() is None  # and no loop is left running here
    assert not loop.is_running()
    assert not loop._ready


def test_a_task_that_waits_is_finished_by_the_loop(loop: Any) -> None:
    async def waits() -> int:
        await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        return 7

    for _ in range(3):  # the same loop, event after event
        assert run_task(loop, waits(), contextvars.copy_context()) == 7
    assert not loop.is_running()


def test_an_exception_comes_back_to_the_caller(loop: Any) -> None:
    async def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_task(loop, fails(), contextvars.copy_context())
    assert asyncio._get_running_loop() is None


def test_tasks_started_in_the_first_step_run_on_the_same_loop(loop: Any) -> None:
    async def starts() -> list[int]:
        out: list[int] = []

        async def child() -> None:
            out.append(1)

        await asyncio.get_running_loop().create_task(child())
        return out

    assert run_task(loop, starts(), contextvars.copy_context()) == [1]


def test_async_generators_are_finalised_on_the_environment_loop(loop: Any) -> None:
    closed: list[bool] = []

    async def numbers() -> Any:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    async def takes_one() -> int:
        async for n in numbers():
            return n
        return 0

    assert run_task(loop, takes_one(), contextvars.copy_context()) == 1
    # The abandoned generator's aclose() was scheduled on the environment's loop: the next
    # event runs it (its first step then goes through the loop, which is not idle).
    assert run_task(loop, asyncio.sleep(0, "next"), contextvars.copy_context()) == "next"
    assert closed == [True]


def test_closing_the_loop_gives_the_thread_its_previous_hooks_back() -> None:
    before = sys.get_asyncgen_hooks()
    loop = new_loop()
    run_task(loop, asyncio.sleep(0), contextvars.copy_context())
    assert sys.get_asyncgen_hooks().firstiter is not before.firstiter  # the loop's, for the environment's life
    loop.close()
    assert sys.get_asyncgen_hooks() == before


def test_another_loop_class_gets_the_first_step_through_its_ready_queue() -> None:
    loop = asyncio.SelectorEventLoop()
    try:
        assert run_task(loop, asyncio.sleep(0, "plain"), contextvars.copy_context()) == "plain"
    finally:
        loop.close()
