"""After os.fork() the child never uses, closes or deletes what the parent created (DESIGN.md §1 "Fork")."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lambdify import ExecutionContext, LambdaContext, handler

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class Tracked:
    """Remembers the process that created it."""

    def __init__(self) -> None:
        self.pid = os.getpid()


def _run_in_child(body: Callable[[Callable[[str, Any], None]], None], report: Path, timeout: float = 30) -> int:
    """Fork; the child runs `body(record)` and exits with os._exit. Returns the child's pid once it has exited.

    `record(stage, value)` appends a JSON line to `report`, so a child that hangs or dies still
    shows how far it got. The parent never waits unboundedly: a child still running after
    `timeout` is killed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() in a process with threads; the context's idle worker
        # thread is exactly the situation under test.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child
        status = 1
        try:
            with report.open("a") as out:

                def record(stage: str, value: Any) -> None:
                    out.write(json.dumps({"stage": stage, "value": value}) + "\n")
                    out.flush()

                try:
                    body(record)
                    status = 0
                except BaseException:
                    record("error", traceback.format_exc())
        finally:
            os._exit(status)

    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the child hung; it reported: {_read(report)}")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child failed; it reported: {_read(report)}"
    return pid


def _read(report: Path) -> dict[str, Any]:
    if not report.exists():
        return {}
    return {line["stage"]: line["value"] for line in map(json.loads, report.read_text().splitlines())}


def _closes(path: Path) -> list[tuple[int, int]]:
    """(pid of the process that closed, pid of the process that created) per close call."""
    if not path.exists():
        return []
    return [(int(a), int(b)) for a, b in (line.split() for line in path.read_text().splitlines())]


def test_child_never_uses_or_closes_the_parents_objects(tmp_path: Path) -> None:
    closes = tmp_path / "closes.txt"
    report = tmp_path / "child.jsonl"
    kept: list[ExecutionContext] = []

    def close(thing: Tracked) -> None:
        with closes.open("a") as out:
            out.write(f"{os.getpid()} {thing.pid}\n")

    def setup(ctx: ExecutionContext) -> None:
        kept.append(ctx)
        ctx.resources.add("thing", Tracked, close=close)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        thing = context.resources["thing"]
        return {
            "pid": os.getpid(),
            "created_in": thing.pid,
            "object": id(thing),
            "cold": context.cold_start,
            "execution": context.execution.id,
            "tmp": str(context.tmp),
        }

    parent_pid = os.getpid()
    try:
        first = fn.invoke({})
        assert first["created_in"] == parent_pid
        assert len(kept) == 1
        parent_ctx = kept[0]

        def child(record: Callable[[str, Any], None]) -> None:
            record("invoke", fn.invoke({}))
            # The parent's ExecutionContext, reached directly rather than through the pool.
            record("kept", {"created_in": parent_ctx.resources["thing"].pid})
            fn.shutdown()
            record("shutdown", True)

        child_pid = _run_in_child(child, report)
        in_child = _read(report)

        # The parent's contexts still work, warm, with the very same object.
        after = fn.invoke({})
        assert after["cold"] is False
        assert after["execution"] == first["execution"]
        assert after["object"] == first["object"]
        assert after["created_in"] == parent_pid
        assert Path(first["tmp"]).is_dir()  # the child's shutdown did not delete the parent's scratch dir
        assert _closes(closes) == [(child_pid, child_pid)]  # the child closed only its own object
        assert fn.stats()["resources"]["thing"]["created"] == 1
    finally:
        fn.shutdown()

    assert in_child["invoke"]["pid"] == child_pid
    assert in_child["invoke"]["created_in"] == child_pid  # a fresh object, not the parent's
    assert in_child["invoke"]["cold"] is True  # inherited contexts are discarded: a new one ran INIT
    assert in_child["invoke"]["execution"] != first["execution"]
    assert in_child["invoke"]["tmp"] != first["tmp"]
    assert in_child["kept"]["created_in"] == child_pid
    assert in_child["shutdown"] is True
    assert _closes(closes) == [(child_pid, child_pid), (parent_pid, parent_pid)]
    assert not Path(first["tmp"]).exists()


def test_child_of_an_async_function_gets_its_own_objects(tmp_path: Path) -> None:
    closes = tmp_path / "closes.txt"
    report = tmp_path / "child.jsonl"

    class AsyncTracked(Tracked):
        async def aclose(self) -> None:
            with closes.open("a") as out:
                out.write(f"{os.getpid()} {self.pid}\n")

    async def make() -> AsyncTracked:
        return AsyncTracked()

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", make)

    @handler(init=setup)
    async def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        thing = await context.resources.aget("thing")
        return {"created_in": thing.pid, "object": id(thing), "cold": context.cold_start}

    parent_pid = os.getpid()
    try:
        first = fn.invoke({})

        def child(record: Callable[[str, Any], None]) -> None:
            record("invoke", fn.invoke({}))
            fn.shutdown()
            record("shutdown", True)

        child_pid = _run_in_child(child, report)
        in_child = _read(report)
        after = fn.invoke({})
    finally:
        fn.shutdown()

    assert first["created_in"] == parent_pid
    assert in_child["invoke"]["created_in"] == child_pid
    assert in_child["invoke"]["cold"] is True
    assert in_child["shutdown"] is True
    assert after == {**first, "cold": False}
    assert _closes(closes) == [(child_pid, child_pid), (parent_pid, parent_pid)]


def test_a_child_forked_from_a_running_loop_gets_its_own_pool(tmp_path: Path) -> None:
    # A fork from inside a coroutine (multiprocessing's "fork", a handler calling os.fork) copies
    # the running loop's state; the child's next loop, in the same thread, must not be mistaken
    # for it, and the child must never hand out the parent's contexts.
    import asyncio

    report = tmp_path / "child.jsonl"

    def setup(ctx: ExecutionContext) -> None:
        ctx.resources.add("thing", Tracked)

    @handler(init=setup)
    async def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        thing = await context.resources.aget("thing")
        return {"created_in": thing.pid, "cold": context.cold_start}

    async def parent() -> tuple[dict[str, Any], int]:
        first = await fn.ainvoke({})

        def child(record: Callable[[str, Any], None]) -> None:
            record("invoke", asyncio.run(fn.ainvoke({})))

        return first, _run_in_child(child, report)

    try:
        first, child_pid = asyncio.run(parent())
    finally:
        fn.shutdown()
    assert first == {"created_in": os.getpid(), "cold": True}
    assert _read(report)["invoke"] == {"created_in": child_pid, "cold": True}


def test_a_forked_child_never_repeats_its_parents_request_ids(tmp_path: Path) -> None:
    # Request ids are made ahead in batches: the child must not take the rest of its parent's.
    from lambdify.core.current import new_request_id

    new_request_id()  # the parent now holds ids made ahead
    report = tmp_path / "child.jsonl"

    def child(record: Callable[[str, Any], None]) -> None:
        record("ids", [new_request_id() for _ in range(300)])

    _run_in_child(child, report)
    parent_ids = {new_request_id() for _ in range(300)}
    child_ids = set(_read(report)["ids"])
    assert len(child_ids) == 300
    assert not child_ids & parent_ids
