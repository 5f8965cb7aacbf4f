from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually

from lambdify import Function, InvocationTimeout, LambdaContext, MemoryLimitExceeded, handler


def _assert_timed_out(error: InvocationTimeout, elapsed: float) -> None:
    assert error.error_type == "Sandbox.Timedout"
    assert error.error_message == "Task timed out after 0.50 seconds"
    assert isinstance(error, TimeoutError)
    assert elapsed < 5, f"answered after {elapsed:.2f} s"


def test_async_handler_sleeping_times_out(functions: list[Function[Any]]) -> None:
    cancelled = threading.Event()

    @handler(timeout=0.5)
    async def nap(event: Any, context: LambdaContext) -> Any:
        if event.get("sleep"):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return context.cold_start

    functions.append(nap)
    assert nap.invoke({}) is True
    started = time.monotonic()
    with pytest.raises(InvocationTimeout) as caught:
        nap.invoke({"sleep": True})
    _assert_timed_out(caught.value, time.monotonic() - started)
    assert cancelled.wait(2)
    assert nap.invoke({}) is True  # the timed-out context was retired: a cold start
    assert nap.stats()["timeouts"] == 1


@pytest.mark.anyio
async def test_a_short_deadline_fires_while_a_long_one_is_pending(functions: list[Function[Any]]) -> None:
    # One watcher serves every deadline on the loop, sleeping until the earliest it knows of: a
    # sooner one must wake it, and its expiry must still reach the loop at its own time.
    @handler(timeout=30, name="long")
    async def long(event: Any, context: LambdaContext) -> Any:
        await asyncio.sleep(event["sleep"])
        return "done"

    @handler(timeout=0.5, name="short")
    async def short(event: Any, context: LambdaContext) -> Any:
        await asyncio.sleep(10)

    functions.extend([long, short])
    long_call = asyncio.ensure_future(long.ainvoke({"sleep": 2.5}))
    await asyncio.sleep(0.1)  # the 30 s deadline is the watcher's next look
    started = time.monotonic()
    with pytest.raises(InvocationTimeout) as caught:
        await short.ainvoke({})
    elapsed = time.monotonic() - started
    _assert_timed_out(caught.value, elapsed)
    assert 0.5 <= elapsed < 2.0
    assert await long_call == "done"  # an unrelated deadline is untouched
    await long.ashutdown()
    await short.ashutdown()


@pytest.mark.anyio
async def test_async_handler_times_out_through_ainvoke(functions: list[Function[Any]]) -> None:
    @handler(timeout=0.5)
    async def nap(event: Any, context: LambdaContext) -> Any:
        if event:
            await asyncio.sleep(10)
        return context.cold_start

    functions.append(nap)
    started = time.monotonic()
    with pytest.raises(InvocationTimeout) as caught:
        await nap.ainvoke({"sleep": 1})
    _assert_timed_out(caught.value, time.monotonic() - started)
    assert await nap.ainvoke({}) is True
    await nap.ashutdown()


def _spin(event: Any, context: LambdaContext) -> Any:
    if event.get("spin"):
        while True:
            pass
    return context.cold_start


def _sleep(event: Any, context: LambdaContext) -> Any:
    if event.get("spin"):
        time.sleep(10)
    return context.cold_start


def _recv(event: Any, context: LambdaContext) -> Any:
    if event.get("spin"):
        left, right = socket.socketpair()
        with left, right:
            left.recv(1)  # nothing ever arrives
    return context.cold_start


@pytest.mark.parametrize(
    "body",
    [pytest.param(_spin, id="pure-python-loop"), pytest.param(_sleep, id="sleep"), pytest.param(_recv, id="recv")],
)
def test_sync_handler_is_answered_at_the_deadline(functions: list[Function[Any]], body: Any) -> None:
    fn = handler(timeout=0.5, name="stuck")(body)
    functions.append(fn)
    assert fn.invoke({}) is True
    started = time.monotonic()
    with pytest.raises(InvocationTimeout) as caught:
        fn.invoke({"spin": True})
    _assert_timed_out(caught.value, time.monotonic() - started)
    assert fn.invoke({}) is True  # cold start on a fresh context
    stats = fn.stats()
    assert stats["timeouts"] == 1
    assert stats["abandoned_threads"] == 1
    assert stats["contexts_retired"] >= 1


@pytest.mark.anyio
async def test_sync_handler_timeout_through_ainvoke(functions: list[Function[Any]]) -> None:
    fn = handler(timeout=0.5, name="stuck")(_spin)
    functions.append(fn)
    started = time.monotonic()
    with pytest.raises(InvocationTimeout) as caught:
        await fn.ainvoke({"spin": True})
    _assert_timed_out(caught.value, time.monotonic() - started)
    assert await fn.ainvoke({}) is True
    assert fn.stats()["abandoned_threads"] == 1
    await fn.ashutdown()


def test_abandoned_pure_python_thread_is_unwound(functions: list[Function[Any]]) -> None:
    finished = threading.Event()

    @handler(timeout=0.3)
    def spin(event: Any, context: LambdaContext) -> None:
        try:
            while True:
                pass
        finally:
            finished.set()

    functions.append(spin)
    with pytest.raises(InvocationTimeout):
        spin.invoke({})
    assert finished.wait(5), "the abandoned thread kept spinning"


def test_too_many_abandoned_threads_stop_the_worker(functions: list[Function[Any]], caplog: Any) -> None:
    release = threading.Event()

    @handler(timeout=0.2, max_abandoned_threads=1)
    def hang(event: Any, context: LambdaContext) -> None:
        release.wait(10)  # a blocking C call: the thread stays abandoned until it returns

    functions.append(hang)
    for _ in range(2):
        with pytest.raises(InvocationTimeout):
            hang.invoke({})
    from lambdify import TooManyRequests
    from lambdify.core.restart import _restart_hooks

    with pytest.raises(TooManyRequests, match="stopped taking work"):
        hang.invoke({})
    assert "needs a restart" in caplog.text
    assert _restart_hooks == []
    release.set()


def test_scratch_dir_persists_and_is_private(functions: list[Function[Any]]) -> None:
    gate = threading.Barrier(2, timeout=10)

    @handler(max_contexts=2)
    def scratch(event: Any, context: LambdaContext) -> Any:
        tmp = context.tmp
        if event.get("write"):
            (tmp / "note.txt").write_text(context.aws_request_id)
        if event.get("wait"):
            gate.wait()
        note = tmp / "note.txt"
        return {"dir": str(tmp), "note": note.read_text() if note.exists() else None}

    functions.append(scratch)
    first = scratch.invoke({"write": True})
    second = scratch.invoke({})
    assert first["dir"] == second["dir"]
    assert second["note"] is not None
    path = Path(first["dir"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(scratch.invoke({"wait": True}))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len({result["dir"] for result in results}) == 2  # two contexts, two directories
    scratch.shutdown()
    assert not path.exists()


def test_context_over_tmp_quota_is_retired(functions: list[Function[Any]]) -> None:
    @handler(tmp_mb=1)
    def fill(event: Any, context: LambdaContext) -> Any:
        if event.get("fill"):
            (context.tmp / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
        return [context.cold_start, str(context.tmp)]

    functions.append(fill)
    cold, first_dir = fill.invoke({"fill": True})  # the result stands; the context is retired after it
    assert cold is True
    assert eventually(lambda: not Path(first_dir).exists())  # SHUTDOWN runs on the context's thread
    cold, second_dir = fill.invoke({})
    assert cold is True and second_dir != first_dir


def test_scratch_dir_never_follows_symlinks_on_removal(functions: list[Function[Any]], tmp_path: Path) -> None:
    outside = tmp_path / "keep.txt"
    outside.write_text("precious")

    @handler
    def link(event: Any, context: LambdaContext) -> None:
        (context.tmp / "escape").symlink_to(tmp_path)

    functions.append(link)
    link.invoke({})
    link.shutdown()
    assert outside.read_text() == "precious"


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from lambdify import handler, MemoryLimitExceeded

    @handler(memory_mb=256, timeout=30)
    def hog(event, context):
        if event.get("mb"):
            block = bytearray(event["mb"] * 1024 * 1024)
            block[::4096] = b"x" * len(block[::4096])   # touch every page
            del block
        return {"cold": context.cold_start, "memory": context.memory_limit_in_mb}

    out = {"first": hog.invoke({})}
    try:
        hog.invoke({"mb": int(sys.argv[1])})
        out["hog"] = "returned"
    except MemoryLimitExceeded as error:
        out["hog"] = [error.error_type, error.error_message]
    out["after"] = hog.invoke({})
    out["stats"] = {k: hog.stats()[k] for k in ("oom", "contexts_retired")}
    hog.shutdown()
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize(
    "megabytes", [pytest.param(1024, id="1GB-hits-the-backstop"), pytest.param(300, id="300MB-peak")]
)
def test_memory_ceiling(tmp_path: Path, megabytes: int) -> None:
    script = tmp_path / "hog.py"
    script.write_text(MEMORY_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(megabytes)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["first"] == {"cold": True, "memory": 256}
    assert out["hog"][0] == "Runtime.OutOfMemory"
    assert "256" in out["hog"][1]
    assert out["after"] == {"cold": True, "memory": 256}  # a fresh context serves the next one
    assert out["stats"]["oom"] == 1


def test_memory_error_maps_to_memory_limit_exceeded(functions: list[Function[Any]]) -> None:
    @handler
    def fail(event: Any, context: LambdaContext) -> None:
        raise MemoryError

    functions.append(fail)
    with pytest.raises(MemoryLimitExceeded) as caught:
        fail.invoke({})
    assert caught.value.error_type == "Runtime.OutOfMemory"


def test_report_line_is_lambdas(functions: list[Function[Any]], caplog: Any) -> None:
    import logging

    @handler(memory_mb=512)
    def quick(event: Any, context: LambdaContext) -> Any:
        return context.aws_request_id

    functions.append(quick)
    with caplog.at_level(logging.INFO, logger="lambdify"):
        first = quick.invoke({})
        second = quick.invoke({})
    lines = [record.getMessage() for record in caplog.records]
    assert f"START RequestId: {first} Version: $LATEST" in lines
    assert f"END RequestId: {first}" in lines
    reports = [line for line in lines if line.startswith("REPORT")]
    assert len(reports) == 2
    import re

    pattern = (
        r"REPORT RequestId: {id}\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\t"
        r"Memory Size: 512 MB\tMax Memory Used: (\d+) MB"
    )
    cold = re.fullmatch(pattern.format(id=first) + r"\tInit Duration: \d+\.\d\d ms", reports[0])
    warm = re.fullmatch(pattern.format(id=second), reports[1])
    assert cold and warm
    assert 10 < int(cold.group(1)) < 512  # measured, not the configured size
    assert lines.index(f"START RequestId: {first} Version: $LATEST") < lines.index(f"END RequestId: {first}")


def test_a_thread_that_dies_before_starting_is_an_error_not_a_hang(
    monkeypatch: pytest.MonkeyPatch, functions: list[Function[Any]]
) -> None:
    # Near an rlimit a new thread can die of MemoryError before it signals that it started, and
    # threading.Thread.start() then waits forever. Simulate exactly that thread.
    from lambdify import InitError
    from lambdify.isolation import thread as isolation

    monkeypatch.setattr(isolation, "_START_TIMEOUT", 0.2)
    monkeypatch.setattr(isolation, "_start_thread", lambda function, args: 0)

    @handler
    def work(event: Any, context: LambdaContext) -> None:
        return None

    functions.append(work)
    with pytest.raises(InitError, match="did not start"):
        work.invoke({})


RLIMIT_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from lambdify import handler, LambdifyError
    from lambdify.core.memory import _vm_data_mb

    @handler
    def work(event, context):
        return 1

    limit = int((_vm_data_mb() + float(sys.argv[1])) * 1024 * 1024)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.RLIM_INFINITY))
    try:
        print("result", work.invoke({}))
    except LambdifyError as error:
        print("error", type(error).__name__, error)
    """
)


@pytest.mark.parametrize("headroom_mb", ["0.5", "4", "9"])
def test_no_hang_at_a_real_memory_limit(tmp_path: Path, headroom_mb: str) -> None:
    script = tmp_path / "limit.py"
    script.write_text(RLIMIT_SCRIPT)
    done = subprocess.run([sys.executable, str(script), headroom_mb], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(("result 1", "error InitError")), done.stdout
