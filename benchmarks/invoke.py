"""Warm invocation overhead of lambdify, each variant against its baseline in the same run.

    python benchmarks/invoke.py [--rounds 31] [--round-seconds 0.03] [--cold 200]

(a) trivial sync handler: `fn.invoke(event)` vs calling the bare function, and vs one
    `anyio.to_thread.run_sync` round trip.            TARGET: invoke <= 0.5x to_thread
    (also shown: the floor, a bare hand-off to a waiting thread and back; `invoke` with a
    memory ceiling; and `ainvoke` of the sync handler)
(b) trivial async handler: `await fn.ainvoke(event)` vs
    `await asyncio.wait_for(handler(event, ctx), timeout)` and vs a bare await.
                                                        TARGET: ainvoke <= 2x wait_for
(c) execution-context creation beyond user init: a cold invocation (no-op init, right after
    `shutdown()`) minus the warm invocation that follows it, paired call by call.

Calls per round are calibrated so that a round takes about `--round-seconds`; variants are
measured round-robin so that the machine's noise hits them alike; medians (and min) of the
per-round µs per call are reported, and ratios are ratios of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from types import SimpleNamespace
from typing import Any

import anyio.to_thread
from _timing import (
    Sample,
    acalibrate,
    ainterleaved,
    elapsed,
    print_header,
    print_ratio,
    print_table,
)
from mechanisms import WaitingThread

from lambdify import Function, handler

SYNC_TARGET = 0.5
ASYNC_TARGET = 2.0
TIMEOUT = 3.0
MEMORY_MB = 2048  # far above this process: only the cost of checking the peak is measured
EVENT: dict[str, Any] = {"id": 1, "name": "bench"}
STUB_CONTEXT = SimpleNamespace(aws_request_id="00000000-0000-4000-8000-000000000000")


def echo(event: Any, context: Any) -> Any:
    return event


async def aecho(event: Any, context: Any) -> Any:
    return event


def _noop_init(ctx: Any) -> None:
    return None


def _timed(fn: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn(EVENT)
    return time.perf_counter() - start


async def _atimed(fn: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn(EVENT)
    return time.perf_counter() - start


# -- (a) sync handler ---------------------------------------------------------------------


async def sync_samples(fn: Function[Any], capped: Function[Any], rounds: int, seconds: float) -> list[Sample]:
    """All on the main thread, inside one running loop (which `anyio.to_thread` needs); the sync
    calls block that loop while they run, as nothing else is scheduled on it."""

    async def bare(n: int) -> float:
        return _timed(lambda e: echo(e, STUB_CONTEXT), n)

    async def to_thread(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await anyio.to_thread.run_sync(echo, EVENT, STUB_CONTEXT)
        return time.perf_counter() - start

    async def invoke(n: int) -> float:
        return _timed(fn.invoke, n)

    async def handoff(n: int) -> float:
        return elapsed(floor.call, n)

    async def invoke_capped(n: int) -> float:
        return _timed(capped.invoke, n)

    async def ainvoke(n: int) -> float:
        return await _atimed(fn.ainvoke, n)

    for function in (fn, capped):  # cold starts outside the measurement
        function.invoke(EVENT)
    await fn.ainvoke(EVENT)
    floor = WaitingThread()
    variants = [
        ("bare call echo(event, ctx)", bare, await acalibrate(bare, seconds)),
        ("anyio.to_thread.run_sync(echo, ...)", to_thread, await acalibrate(to_thread, seconds)),
        ("hand-off to a waiting thread (2 locks)", handoff, await acalibrate(handoff, seconds)),
        ("fn.invoke(event)", invoke, await acalibrate(invoke, seconds)),
        (f"fn.invoke(event) [memory_mb={MEMORY_MB}]", invoke_capped, await acalibrate(invoke_capped, seconds)),
        ("await fn.ainvoke(event) [sync handler]", ainvoke, await acalibrate(ainvoke, seconds)),
    ]
    try:
        samples = await ainterleaved(variants, rounds)
    finally:
        floor.stop()
    await fn.ashutdown()
    return samples


def bench_sync(rounds: int, seconds: float) -> None:
    print("## (a) trivial sync handler, warm")
    fn = handler(timeout=TIMEOUT)(echo)
    capped = handler(timeout=TIMEOUT, memory_mb=MEMORY_MB, name="echo_capped")(echo)
    try:
        samples = asyncio.run(sync_samples(fn, capped, rounds, seconds))
    finally:
        fn.shutdown()
        capped.shutdown()
    bare, to_thread, handoff, invoke, invoke_capped, ainvoke = samples
    print_table(samples)
    print_ratio("fn.invoke / anyio.to_thread.run_sync", invoke, to_thread, SYNC_TARGET)
    print_ratio("fn.invoke / bare call", invoke, bare)
    print_ratio("fn.invoke / hand-off to a waiting thread", invoke, handoff)
    print_ratio(f"fn.invoke [memory_mb={MEMORY_MB}] / fn.invoke", invoke_capped, invoke)
    print_ratio("fn.ainvoke(sync handler) / anyio.to_thread", ainvoke, to_thread)
    print(f"fn.invoke overhead over the bare call: {invoke.median - bare.median:.2f} µs")
    print()


# -- (b) async handler --------------------------------------------------------------------


async def async_samples(fn: Function[Any], rounds: int, seconds: float) -> list[Sample]:
    async def bare(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await aecho(EVENT, STUB_CONTEXT)
        return time.perf_counter() - start

    async def wait_for(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await asyncio.wait_for(aecho(EVENT, STUB_CONTEXT), TIMEOUT)
        return time.perf_counter() - start

    async def ainvoke(n: int) -> float:
        return await _atimed(fn.ainvoke, n)

    await fn.ainvoke(EVENT)  # cold start outside the measurement
    variants = [
        ("bare await aecho(event, ctx)", bare, await acalibrate(bare, seconds)),
        (f"await asyncio.wait_for(aecho(...), {TIMEOUT:g})", wait_for, await acalibrate(wait_for, seconds)),
        ("await fn.ainvoke(event)", ainvoke, await acalibrate(ainvoke, seconds)),
    ]
    samples = await ainterleaved(variants, rounds)
    await fn.ashutdown()
    return samples


def bench_async(rounds: int, seconds: float) -> None:
    print("## (b) trivial async handler, warm, on the caller's loop")
    fn = handler(timeout=TIMEOUT)(aecho)
    bare, wait_for, ainvoke = asyncio.run(async_samples(fn, rounds, seconds))
    print_table([bare, wait_for, ainvoke])
    print_ratio("fn.ainvoke / asyncio.wait_for", ainvoke, wait_for, ASYNC_TARGET)
    print_ratio("fn.ainvoke / bare await", ainvoke, bare)
    print(f"fn.ainvoke overhead over the bare await: {ainvoke.median - bare.median:.2f} µs")
    print()


# -- (c) cold start ------------------------------------------------------------------------


def cold_pairs_sync(fn: Function[Any], count: int) -> list[tuple[float, float]]:
    pairs = []
    for _ in range(count):
        fn.shutdown()
        t0 = time.perf_counter()
        fn.invoke(EVENT)
        t1 = time.perf_counter()
        fn.invoke(EVENT)
        t2 = time.perf_counter()
        pairs.append((t1 - t0, t2 - t1))
    return pairs


async def cold_pairs_async(fn: Function[Any], count: int) -> list[tuple[float, float]]:
    pairs = []
    for _ in range(count):
        await fn.ashutdown()
        t0 = time.perf_counter()
        await fn.ainvoke(EVENT)
        t1 = time.perf_counter()
        await fn.ainvoke(EVENT)
        t2 = time.perf_counter()
        pairs.append((t1 - t0, t2 - t1))
    return pairs


def print_cold(label: str, pairs: list[tuple[float, float]], stats: dict[str, Any], count: int) -> None:
    cold = [c * 1e6 for c, _ in pairs]
    warm = [w * 1e6 for _, w in pairs]
    extra = [(c - w) * 1e6 for c, w in pairs]
    print(f"{label}: {count} cold/warm pairs")
    print(f"  cold invocation   : median {statistics.median(cold):9.1f} µs   min {min(cold):9.1f} µs")
    print(f"  warm invocation   : median {statistics.median(warm):9.1f} µs   min {min(warm):9.1f} µs")
    print(f"  cold - warm       : median {statistics.median(extra):9.1f} µs   (of the per-pair differences)")
    status = "ok" if stats.get("cold_starts") == count else f"UNEXPECTED, wanted {count}"
    shown = ", ".join(f"{key}={stats.get(key)}" for key in ("warm_starts", "errors", "init_ms_last"))
    print(f"  stats: cold_starts={stats.get('cold_starts')} ({status}), {shown}")
    print()


def bench_cold(count: int) -> None:
    print("## (c) execution-context creation beyond user init (no-op init; shutdown() before each cold call)")
    fn = handler(timeout=TIMEOUT, init=_noop_init)(echo)
    try:
        pairs = cold_pairs_sync(fn, count)
        print_cold("sync handler, fn.invoke", pairs, fn.stats(), count)
    finally:
        fn.shutdown()
    afn = handler(timeout=TIMEOUT, init=_noop_init)(aecho)

    async def run() -> list[tuple[float, float]]:
        try:
            return await cold_pairs_async(afn, count)
        finally:
            await afn.ashutdown()

    pairs = asyncio.run(run())
    print_cold("async handler, await fn.ainvoke", pairs, afn.stats(), count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=31, help="rounds per variant (median and min are reported)")
    parser.add_argument("--round-seconds", type=float, default=0.03, help="target duration of one round")
    parser.add_argument("--cold", type=int, default=200, help="cold/warm pairs for (c)")
    args = parser.parse_args()
    print_header("warm invocation overhead, µs per call")
    started = time.perf_counter()
    bench_sync(args.rounds, args.round_seconds)
    bench_async(args.rounds, args.round_seconds)
    bench_cold(args.cold)
    print(f"# total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
