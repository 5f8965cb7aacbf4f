"""The pool of warm execution contexts (DESIGN.md §1 Pool, §3 Concurrency)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually

from lambdify import ExecutionContext, FunctionError, LambdaContext, TooManyRequests, handler


def _gone(path: Path) -> bool:
    return not path.exists()


# -- warm reuse --------------------------------------------------------------------------------


def test_sequential_invocations_reuse_one_warm_context() -> None:
    inits: list[str] = []

    def setup(ctx: ExecutionContext) -> None:
        inits.append(ctx.id)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return {"cold_start": context.cold_start, "ctx": context.execution.id}

    try:
        results = [fn.invoke({}) for _ in range(100)]
        stats = fn.stats()
    finally:
        fn.shutdown()

    assert len(inits) == 1
    assert [r["cold_start"] for r in results] == [True] + [False] * 99
    assert {r["ctx"] for r in results} == {inits[0]}
    assert stats["invocations"] == 100
    assert stats["cold_starts"] == 1
    assert stats["warm_starts"] == 99
    assert stats["contexts_alive"] == 1


@pytest.mark.anyio
async def test_sequential_ainvocations_reuse_one_warm_context() -> None:
    inits: list[str] = []

    async def setup(ctx: ExecutionContext) -> None:
        inits.append(ctx.id)

    @handler(init=setup)
    async def fn(event: dict[str, Any], context: LambdaContext) -> bool:
        return context.cold_start

    try:
        cold = [await fn.ainvoke({}) for _ in range(100)]
        stats = fn.stats()
    finally:
        await fn.ashutdown()

    assert len(inits) == 1
    assert cold == [True] + [False] * 99
    assert (stats["cold_starts"], stats["warm_starts"]) == (1, 99)


@pytest.mark.anyio
async def test_concurrent_ainvocations_get_one_context_each() -> None:
    n = 5
    inits: list[str] = []
    seen: list[str] = []
    all_in = asyncio.Event()

    async def setup(ctx: ExecutionContext) -> None:
        inits.append(ctx.id)

    @handler(init=setup)
    async def fn(event: dict[str, Any], context: LambdaContext) -> bool:
        seen.append(context.execution.id)
        if len(seen) == n:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 10)
        return context.cold_start

    try:
        cold = await asyncio.gather(*(fn.ainvoke({}) for _ in range(n)))
        stats = fn.stats()
    finally:
        await fn.ashutdown()

    assert cold == [True] * n
    assert len(inits) == n
    assert len(set(inits)) == n  # each context initialised exactly once
    assert sorted(seen) == sorted(inits)
    assert stats["contexts_alive"] == n
    assert stats["cold_starts"] == n


def test_concurrent_invocations_from_threads_get_one_context_each() -> None:
    n = 4
    inits: list[str] = []
    barrier = threading.Barrier(n, timeout=10)

    def setup(ctx: ExecutionContext) -> None:
        inits.append(ctx.id)

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> str:
        barrier.wait()
        return context.execution.id

    results: list[str] = []
    try:
        threads = [threading.Thread(target=lambda: results.append(fn.invoke({}))) for _ in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        fn.shutdown()

    assert len(results) == n
    assert sorted(results) == sorted(inits)
    assert len(set(inits)) == n


@pytest.mark.anyio
async def test_most_recently_released_context_is_reused_first() -> None:
    entered: list[str] = []
    both_in = asyncio.Event()
    gates = {"a": asyncio.Event(), "b": asyncio.Event()}

    @handler
    async def fn(event: dict[str, Any], context: LambdaContext) -> str:
        gate = event.get("gate")
        if gate is not None:
            entered.append(gate)
            if len(entered) == 2:
                both_in.set()
            await asyncio.wait_for(gates[gate].wait(), 10)
        return context.execution.id

    try:
        task_a = asyncio.create_task(fn.ainvoke({"gate": "a"}))
        task_b = asyncio.create_task(fn.ainvoke({"gate": "b"}))
        await asyncio.wait_for(both_in.wait(), 10)
        gates["a"].set()
        ctx_a = await task_a
        gates["b"].set()
        ctx_b = await task_b  # released last
        later = [await fn.ainvoke({}) for _ in range(5)]
    finally:
        await fn.ashutdown()

    assert ctx_a != ctx_b
    assert later == [ctx_b] * 5


def test_most_recently_released_context_is_reused_first_sync() -> None:
    entered = threading.Barrier(3, timeout=10)
    gates = {"a": threading.Event(), "b": threading.Event()}

    @handler
    def fn(event: dict[str, Any], context: LambdaContext) -> str:
        gate = event.get("gate")
        if gate is not None:
            entered.wait()
            gates[gate].wait(10)
        return context.execution.id

    results: dict[str, str] = {}

    def run(gate: str) -> None:
        results[gate] = fn.invoke({"gate": gate})

    try:
        threads = {gate: threading.Thread(target=run, args=(gate,)) for gate in gates}
        for thread in threads.values():
            thread.start()
        entered.wait()
        gates["a"].set()
        threads["a"].join(10)
        gates["b"].set()
        threads["b"].join(10)
        later = [fn.invoke({}) for _ in range(5)]
    finally:
        fn.shutdown()

    assert results["a"] != results["b"]
    assert later == [results["b"]] * 5


# -- throttling --------------------------------------------------------------------------------


def test_full_pool_throttles_after_queue_timeout() -> None:
    started = threading.Event()
    release = threading.Event()

    @handler(max_contexts=1, queue_timeout=0.2)
    def fn(event: dict[str, Any], context: LambdaContext) -> str:
        if event.get("slow"):
            started.set()
            release.wait(10)
        return context.execution.id

    first: list[str] = []
    try:
        thread = threading.Thread(target=lambda: first.append(fn.invoke({"slow": True})))
        thread.start()
        assert started.wait(10)
        with pytest.raises(TooManyRequests) as caught:
            fn.invoke({})
        release.set()
        thread.join(10)
        stats = fn.stats()
    finally:
        release.set()
        fn.shutdown()

    assert not isinstance(caught.value, FunctionError)
    assert len(first) == 1
    assert stats["throttles"] == 1
    assert stats["errors"] == 0
    assert stats["contexts_alive"] == 1


def test_queued_invocation_waits_for_the_busy_context() -> None:
    started = threading.Event()
    release = threading.Event()

    @handler(max_contexts=1, queue_timeout=10)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if event.get("slow"):
            started.set()
            release.wait(10)
        return {"ctx": context.execution.id, "cold_start": context.cold_start}

    first: list[dict[str, Any]] = []
    try:
        thread = threading.Thread(target=lambda: first.append(fn.invoke({"slow": True})))
        thread.start()
        assert started.wait(10)
        timer = threading.Timer(0.3, release.set)
        timer.start()
        second = fn.invoke({})
        thread.join(10)
        timer.join(10)
        stats = fn.stats()
    finally:
        release.set()
        fn.shutdown()

    assert second["ctx"] == first[0]["ctx"]
    assert second["cold_start"] is False
    assert stats["throttles"] == 0
    assert stats["cold_starts"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("queue_timeout", "throttled"),
    [pytest.param(0.2, True, id="short-queue-throttles"), pytest.param(10, False, id="long-queue-waits")],
)
async def test_full_pool_with_async_callers(queue_timeout: float, throttled: bool) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @handler(max_contexts=1, queue_timeout=queue_timeout)
    async def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if event.get("slow"):
            started.set()
            await asyncio.wait_for(release.wait(), 10)
        return {"ctx": context.execution.id, "cold_start": context.cold_start}

    outcome: Any
    try:
        slow = asyncio.create_task(fn.ainvoke({"slow": True}))
        await asyncio.wait_for(started.wait(), 10)
        asyncio.get_running_loop().call_later(0.5, release.set)
        try:
            outcome = await fn.ainvoke({})
        except TooManyRequests as exc:
            outcome = exc
        first = await slow
        stats = fn.stats()
    finally:
        release.set()
        await fn.ashutdown()

    if throttled:
        assert isinstance(outcome, TooManyRequests)
        assert not isinstance(outcome, FunctionError)
        assert stats["throttles"] == 1
    else:
        assert outcome == {"ctx": first["ctx"], "cold_start": False}
        assert stats["throttles"] == 0
    assert stats["contexts_alive"] == 1


# -- idle expiry -------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 4, None], ids=["one-at-a-time", "shared-4", "shared-unbounded"])
def test_idle_context_is_retired_after_idle_ttl(concurrency: int | None) -> None:
    closed: list[str] = []

    def setup(ctx: ExecutionContext) -> None:
        ctx.on_shutdown(lambda: closed.append(ctx.id))

    @handler(init=setup, idle_ttl=0.2, concurrency=concurrency)  # (only async handlers share a context)
    async def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return {"ctx": context.execution.id, "cold_start": context.cold_start}

    try:
        first = fn.invoke({})
        assert eventually(lambda: closed == [first["ctx"]], within=10.0)
        assert eventually(lambda: fn.stats()["contexts_alive"] == 0, within=10.0)
        stats = fn.stats()
        after = fn.invoke({})
    finally:
        fn.shutdown()

    assert closed[0] == first["ctx"]
    assert stats["contexts_retired"] == 1
    assert after["cold_start"] is True
    assert after["ctx"] != first["ctx"]


# -- provisioned concurrency -------------------------------------------------------------------


def test_provisioned_contexts_are_initialised_at_start() -> None:
    inits: list[str] = []

    def setup(ctx: ExecutionContext) -> None:
        inits.append(ctx.id)

    @handler(init=setup, provisioned=2)
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return {"ctx": context.execution.id, "cold_start": context.cold_start}

    try:
        assert inits == []
        fn.start()
        inits_before = list(inits)
        results = [fn.invoke({}) for _ in range(3)]
        stats = fn.stats()
    finally:
        fn.shutdown()

    assert len(inits_before) == 2
    assert len(set(inits_before)) == 2
    assert [r["cold_start"] for r in results] == [False] * 3
    assert {r["ctx"] for r in results} <= set(inits_before)
    assert len(inits) == 2
    assert stats["cold_starts"] == 0
    assert stats["warm_starts"] == 3


@pytest.mark.anyio
async def test_provisioned_contexts_are_initialised_at_astart() -> None:
    inits: list[str] = []

    async def setup(ctx: ExecutionContext) -> None:
        inits.append(ctx.id)

    @handler(init=setup, provisioned=2)
    async def fn(event: dict[str, Any], context: LambdaContext) -> bool:
        return context.cold_start

    try:
        await fn.astart()
        inits_before = list(inits)
        cold = [await fn.ainvoke({}) for _ in range(3)]
    finally:
        await fn.ashutdown()

    assert len(set(inits_before)) == 2
    assert cold == [False] * 3
    assert len(inits) == 2


# -- shutdown --------------------------------------------------------------------------------


def test_shutdown_hooks_run_once_newest_first_and_scratch_is_removed() -> None:
    calls: list[str] = []

    def setup(ctx: ExecutionContext) -> None:
        ctx.on_shutdown(lambda: calls.append("first registered"))
        ctx.on_shutdown(lambda: calls.append("second registered"))

    @handler(init=setup)
    def fn(event: dict[str, Any], context: LambdaContext) -> str:
        (context.tmp / "scratch.txt").write_text("x")
        return str(context.tmp)

    try:
        tmp = Path(fn.invoke({}))
        assert fn.invoke({}) == str(tmp)
        before = list(calls)
        assert tmp.is_dir()
    finally:
        fn.shutdown()
    fn.shutdown()  # a second shutdown runs nothing again

    assert before == []
    assert calls == ["second registered", "first registered"]
    assert not tmp.exists()


@pytest.mark.anyio
async def test_async_shutdown_hooks_run_once_newest_first_at_ashutdown() -> None:
    calls: list[str] = []

    async def async_hook() -> None:
        await asyncio.sleep(0)
        calls.append("async hook")

    async def setup(ctx: ExecutionContext) -> None:
        ctx.on_shutdown(lambda: calls.append("sync hook"))
        ctx.on_shutdown(async_hook)

    @handler(init=setup)
    async def fn(event: dict[str, Any], context: LambdaContext) -> str:
        (context.tmp / "scratch.txt").write_text("x")
        return str(context.tmp)

    try:
        tmp = Path(await fn.ainvoke({}))
        await fn.ainvoke({})
        before = list(calls)
    finally:
        await fn.ashutdown()
    await fn.ashutdown()

    assert before == []
    assert calls == ["async hook", "sync hook"]
    assert _gone(tmp)


def test_class_form_close_runs_at_shutdown() -> None:
    calls: list[str] = []

    class Counter:
        def __init__(self, ctx: ExecutionContext) -> None:
            calls.append("init")
            self.count = 0

        def __call__(self, event: dict[str, Any], context: LambdaContext) -> int:
            self.count += 1
            return self.count

        def close(self) -> None:
            calls.append("close")

    fn = handler(Counter)  # the same as decorating the class with @handler
    try:
        counts = [fn.invoke({}) for _ in range(3)]
        before = list(calls)
    finally:
        fn.shutdown()

    assert counts == [1, 2, 3]
    assert before == ["init"]
    assert calls == ["init", "close"]


def test_shutdown_waits_for_the_invocation_in_flight() -> None:
    started = threading.Event()
    log: list[str] = []

    def finish() -> None:
        time.sleep(0.3)
        log.append("deferred done")

    @handler(timeout=10)
    def fn(event: dict[str, Any], context: LambdaContext) -> str:
        started.set()
        time.sleep(0.2)
        context.defer(finish)
        log.append("handler done")
        return "ok"

    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(fn.invoke({})))
    thread.start()
    try:
        assert started.wait(10)
    finally:
        fn.shutdown()
    seen = list(log)
    thread.join(10)

    assert seen == ["handler done", "deferred done"]
    assert results == ["ok"]
    assert fn.stats()["contexts_alive"] == 0


def test_shutdown_from_another_thread_waits_for_the_invocations_on_a_loop() -> None:
    # An async handler's `invoke()` runs on lambdify's own loop, in its own thread: the pool of
    # that loop is closed on the loop, and shutdown() waits until it has been.
    started = threading.Semaphore(0)
    log: list[str] = []

    async def finish() -> None:
        await asyncio.sleep(0.3)
        log.append("deferred done")

    @handler(timeout=10, concurrency=None)
    async def fn(event: dict[str, Any], context: LambdaContext) -> str:
        started.release()
        await asyncio.sleep(0.2)
        context.defer(finish())
        log.append(f"handler {event['n']} done")
        return "ok"

    results: list[Any] = []
    threads = [threading.Thread(target=lambda n=n: results.append(fn.invoke({"n": n}))) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        assert all(started.acquire(timeout=10) for _ in threads)  # all three in flight
    finally:
        fn.shutdown()
    seen = sorted(log)
    for thread in threads:
        thread.join(10)

    assert seen == ["deferred done"] * 3 + [f"handler {n} done" for n in range(3)]
    assert results == ["ok"] * 3
    assert fn.stats()["contexts_alive"] == 0
    assert fn.invoke({"n": 3}) == "ok"  # a new pool serves after the shutdown
    fn.shutdown()


@pytest.mark.anyio
async def test_idle_context_of_a_running_loop_is_retired_on_that_loop() -> None:
    retired_on: list[Any] = []

    async def setup(ctx: ExecutionContext) -> None:
        async def hook() -> None:
            retired_on.append(asyncio.get_running_loop())

        ctx.on_shutdown(hook)

    @handler(init=setup, idle_ttl=0.2, concurrency=None)
    async def fn(event: dict[str, Any], context: LambdaContext) -> str:
        return context.execution.id

    try:
        first = await fn.ainvoke({})
        for _ in range(1000):  # the loop must run for the expiry handed to it to happen
            if fn.stats()["contexts_alive"] == 0:
                break
            await asyncio.sleep(0.01)
        alive = fn.stats()["contexts_alive"]
        second = await fn.ainvoke({})
    finally:
        await fn.ashutdown()

    assert alive == 0
    assert retired_on[0] is asyncio.get_running_loop()
    assert second != first


def test_a_loops_pool_expires_idle_contexts_between_bursts_of_invocations_from_many_threads() -> None:
    # Eight threads invoke on lambdify's loop in bursts; between bursts every context idles out.
    # No retired context is handed out, and no invocation goes uncounted.
    @handler(idle_ttl=0.05, timeout=10)
    async def fn(event: dict[str, Any], context: LambdaContext) -> bool:
        assert not context.execution.retired
        await asyncio.sleep(event["pause"])
        return True

    all_paused = threading.Barrier(8)

    def caller(seed: int) -> list[Any]:
        outcomes = []
        for i in range(40):
            outcomes.append(fn.invoke({"pause": 0.001 * ((seed + i) % 3)}))
            if i % 10 == 9:  # all callers pause together, long enough for every context to idle out
                all_paused.wait(30)
                time.sleep(0.25)
        return outcomes

    results: list[list[Any]] = []
    threads = [threading.Thread(target=lambda seed=seed: results.append(caller(seed))) for seed in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        stats = fn.stats()
    finally:
        fn.shutdown()

    assert [outcome for outcomes in results for outcome in outcomes] == [True] * 320
    assert stats["invocations"] == 320
    assert stats["cold_starts"] + stats["warm_starts"] == 320
    assert stats["errors"] == 0
    assert stats["contexts_retired"] >= 1  # expiry did run meanwhile
    assert fn.stats()["contexts_alive"] == 0


def test_a_loops_pool_is_changed_only_on_its_loops_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its hot path takes no lock: idle expiry (from the housekeeping thread) and a shutdown from
    # another thread are handed to the loop.
    from lambdify.core import pool as pool_module

    threads: dict[str, set[int]] = {"expiry": set(), "close": set()}
    expired, close_here = pool_module.Pool._expired, pool_module.Pool._close_here

    name = "changed-on-its-loop"  # (other tests' pools, reaped by the housekeeping thread, are not recorded)

    def recording_expired(self: Any, now: float) -> Any:
        if self.config.name == name:
            threads["expiry"].add(threading.get_ident())
        return expired(self, now)

    def recording_close_here(self: Any) -> None:
        if self.config.name == name:
            threads["close"].add(threading.get_ident())
        close_here(self)

    monkeypatch.setattr(pool_module.Pool, "_expired", recording_expired)
    monkeypatch.setattr(pool_module.Pool, "_close_here", recording_close_here)

    @handler(idle_ttl=0.1, name=name)
    async def fn(event: dict[str, Any], context: LambdaContext) -> int:
        return threading.get_ident()  # lambdify's own loop runs async handlers for invoke()

    try:
        loop_thread = fn.invoke({})
        assert eventually(lambda: fn.stats()["contexts_retired"] == 1, within=10.0)
    finally:
        fn.shutdown()  # from this thread, while that loop runs in its own
    closed = fn.engine._here is None or fn.engine._here.closed  # it stops handing out contexts at once

    assert eventually(lambda: threads["close"], within=10.0)  # (it had no context left to wait for)
    assert closed
    assert threads == {"expiry": {loop_thread}, "close": {loop_thread}}


# -- concurrency per context -------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_handler_with_concurrency_shares_one_context() -> None:
    n = 3
    inits: list[str] = []
    seen: list[str] = []
    all_in = asyncio.Event()

    async def setup(ctx: ExecutionContext) -> None:
        inits.append(ctx.id)

    @handler(init=setup, concurrency=n)
    async def fn(event: dict[str, Any], context: LambdaContext) -> str:
        seen.append(context.execution.id)
        if len(seen) == n:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 10)  # all three are in flight at once
        return context.execution.id

    try:
        results = await asyncio.gather(*(fn.ainvoke({}) for _ in range(n)))
        stats = fn.stats()
    finally:
        await fn.ashutdown()

    assert len(inits) == 1
    assert results == [inits[0]] * n
    assert stats["contexts_alive"] == 1
    assert stats["cold_starts"] == 1


def test_sync_handler_with_concurrency_is_rejected_at_decoration() -> None:
    with pytest.raises(ValueError, match="concurrency"):

        @handler(concurrency=2)
        def fn(event: dict[str, Any], context: LambdaContext) -> None:
            pass


def test_stats_add_up_every_loops_pool_and_outlive_them() -> None:
    @handler(name="counted")
    async def counted(event: Any, context: LambdaContext) -> Any:
        if event.get("fail"):
            raise ValueError("no")
        return 1

    for _ in range(3):
        counted.invoke({})  # lambdify's own loop: one pool
    asyncio.run(counted.ainvoke({}))  # a second loop, and a second pool
    with pytest.raises(FunctionError):
        asyncio.run(counted.ainvoke({"fail": True}))  # a third
    before = counted.stats()
    counted.shutdown()
    after = counted.stats()
    assert before["invocations"] == after["invocations"] == 5
    assert (after["cold_starts"], after["warm_starts"], after["errors"]) == (3, 2, 1)


@pytest.mark.anyio
async def test_a_shared_context_that_went_idle_is_reused_warm_and_retired_at_shutdown() -> None:
    closed: list[str] = []

    def setup(ctx: ExecutionContext) -> None:
        ctx.on_shutdown(lambda: closed.append(ctx.id))

    @handler(init=setup, concurrency=None)
    async def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        await asyncio.sleep(event["nap"])
        return {"ctx": context.execution.id, "cold_start": context.cold_start}

    first = await asyncio.gather(*(fn.ainvoke({"nap": 0.05}) for _ in range(3)))  # one context, shared
    later = await fn.ainvoke({"nap": 0})  # after it went idle
    await fn.ashutdown()
    assert len({r["ctx"] for r in [*first, later]}) == 1
    assert [r["cold_start"] for r in first].count(True) == 1 and later["cold_start"] is False
    assert closed == [later["ctx"]]
    assert fn.stats()["contexts_alive"] == 0


def test_pools_of_closed_loops_do_not_pile_up() -> None:
    # asyncio.run(fn.ainvoke(...)) from sync code makes a new loop, and so a new pool, each time.
    @handler(name="each_loop")
    async def each_loop(event: Any, context: LambdaContext) -> Any:
        return event["n"]

    assert [asyncio.run(each_loop.ainvoke({"n": n})) for n in range(40)] == list(range(40))
    stats = each_loop.stats()
    each_loop.shutdown()
    assert (stats["invocations"], stats["cold_starts"]) == (40, 40)  # one context per loop
    assert len(each_loop.engine._counting) <= 2  # the pools of closed loops were folded into the totals
    assert each_loop.stats()["invocations"] == 40


def test_loops_running_in_two_threads_each_get_their_own_pool() -> None:
    # The pool of the loop last used is reused without asking asyncio for the running loop while
    # that loop runs in the calling thread; two loops taking turns must never share contexts.
    @handler(name="two_loops")
    async def fn(event: Any, context: LambdaContext) -> Any:
        await asyncio.sleep(0)
        return context.execution.id

    seen: dict[str, set[str]] = {"a": set(), "b": set()}
    turn = threading.Barrier(2, timeout=10)

    def run(name: str) -> None:
        async def calls() -> None:
            for _ in range(20):
                turn.wait()  # (both loops alive and interleaving)
                seen[name].add(await fn.ainvoke({}))

        asyncio.run(calls())

    threads = [threading.Thread(target=run, args=(name,)) for name in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    fn.shutdown()
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1
    assert seen["a"].isdisjoint(seen["b"])
