"""Per-call cost of the mechanisms an invocation could be built from.

    python benchmarks/mechanisms.py [--rounds 7] [--scale 1.0]

Everything async is measured inside a running asyncio loop. Each row is the median (and min)
µs per call over `--rounds` rounds; the "empty loop" rows show what the measuring loop itself
costs. The one-off cost of the first `anyio.fail_after` (which lazily imports anyio's asyncio
backend) is measured in fresh subprocesses.
"""

from __future__ import annotations

import _thread
import argparse
import asyncio
import contextvars
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import anyio
import anyio.to_thread
from _timing import Sample, elapsed, print_header, print_table, sample_async, sample_sync

SMALL_DICT = {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": "hello", "ok": True}
_VAR: contextvars.ContextVar[int] = contextvars.ContextVar("bench")


def _noop() -> None:
    return None


# -- sync mechanisms ----------------------------------------------------------------------


def bench_empty_call(n: int) -> float:
    return elapsed(_noop, n)


def bench_statm_open_read(n: int) -> float:
    def read() -> bytes:
        with open("/proc/self/statm", "rb") as f:
            return f.read()

    return elapsed(read, n)


def bench_statm_pread(n: int) -> float:
    fd = os.open("/proc/self/statm", os.O_RDONLY)
    try:
        return elapsed(lambda: os.pread(fd, 128, 0), n)
    finally:
        os.close(fd)


def bench_getrusage(n: int) -> float:
    return elapsed(lambda: resource.getrusage(resource.RUSAGE_SELF), n)


def bench_contextvar(n: int) -> float:
    def set_reset() -> None:
        _VAR.reset(_VAR.set(1))

    return elapsed(set_reset, n)


def bench_json_dumps(n: int) -> float:
    return elapsed(lambda: json.dumps(SMALL_DICT), n)


class WaitingThread:
    """A dedicated thread parked on a lock: the caller hands it work with one lock and waits on another."""

    def __init__(self) -> None:
        self.go = _thread.allocate_lock()
        self.done = _thread.allocate_lock()
        self.go.acquire()
        self.done.acquire()
        self.fn = _noop
        self.stopping = False
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        while True:
            self.go.acquire()
            if self.stopping:
                self.done.release()
                return
            self.fn()
            self.done.release()

    def call(self) -> None:
        self.go.release()
        self.done.acquire()

    def stop(self) -> None:
        self.stopping = True
        self.call()


def bench_thread_handoff(n: int) -> float:
    worker = WaitingThread()
    try:
        return elapsed(worker.call, n)
    finally:
        worker.stop()


def bench_worker_call(n: int) -> float:
    """lambdify's own hand-off: `Worker.call`, which wakes its thread through a doorbell (an
    eventfd written with the GIL released) and waits on a lock."""
    from lambdify.isolation.thread import Worker

    worker = Worker("bench")
    try:
        return elapsed(lambda: worker.call(_noop, timeout=10.0), n)
    finally:
        worker.stop()


# -- async mechanisms (run inside the loop) -----------------------------------------------


async def _noop_coro() -> None:
    return None


async def abench_empty_await(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await _noop_coro()
    return time.perf_counter() - start


async def abench_asyncio_timeout(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        async with asyncio.timeout(10):  # noqa: ASYNC100 - enter+exit is what is measured
            pass
    return time.perf_counter() - start


async def abench_fail_after(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        with anyio.fail_after(10):  # noqa: ASYNC100 - enter+exit is what is measured
            pass
    return time.perf_counter() - start


async def abench_call_at(n: int) -> float:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    for _ in range(n):
        loop.call_at(loop.time() + 10, _noop).cancel()
    took = time.perf_counter() - start
    await asyncio.sleep(0)  # let the loop drop the cancelled handles
    return took


async def abench_anyio_to_thread(n: int) -> float:
    run_sync = anyio.to_thread.run_sync
    start = time.perf_counter()
    for _ in range(n):
        await run_sync(_noop)
    return time.perf_counter() - start


async def abench_asyncio_to_thread(n: int) -> float:
    to_thread = asyncio.to_thread
    start = time.perf_counter()
    for _ in range(n):
        await to_thread(_noop)
    return time.perf_counter() - start


async def run_async(scale: float, rounds: int) -> list[Sample]:
    def n(base: int) -> int:
        return max(10, int(base * scale))

    return [
        await sample_async("empty loop: await a no-op coroutine", abench_empty_await, n(50_000), rounds),
        await sample_async("asyncio.timeout enter+exit", abench_asyncio_timeout, n(20_000), rounds),
        await sample_async("anyio.fail_after enter+exit (warm)", abench_fail_after, n(20_000), rounds),
        await sample_async("loop.call_at scheduled+cancelled", abench_call_at, n(20_000), rounds),
        await sample_async("anyio.to_thread.run_sync round trip", abench_anyio_to_thread, n(1_000), rounds),
        await sample_async("asyncio.to_thread round trip", abench_asyncio_to_thread, n(1_000), rounds),
    ]


def run_sync(scale: float, rounds: int) -> list[Sample]:
    def n(base: int) -> int:
        return max(10, int(base * scale))

    return [
        sample_sync("empty loop: call a no-op function", bench_empty_call, n(100_000), rounds),
        sample_sync("open+read /proc/self/statm", bench_statm_open_read, n(5_000), rounds),
        sample_sync("os.pread on a kept fd of /proc/self/statm", bench_statm_pread, n(10_000), rounds),
        sample_sync("resource.getrusage(RUSAGE_SELF)", bench_getrusage, n(20_000), rounds),
        sample_sync("ContextVar set+reset", bench_contextvar, n(50_000), rounds),
        sample_sync("hand-off to a waiting thread and back (2 locks)", bench_thread_handoff, n(2_000), rounds),
        sample_sync("lambdify Worker.call (doorbell, then a lock)", bench_worker_call, n(2_000), rounds),
        sample_sync("json.dumps of a small dict", bench_json_dumps, n(20_000), rounds),
    ]


# -- one-off cost of the first anyio.fail_after, in a fresh interpreter --------------------

_FIRST_FAIL_AFTER = """
import asyncio, sys, time
import anyio

async def main():
    before = set(sys.modules)
    t0 = time.perf_counter()
    with anyio.fail_after(10):
        pass
    t1 = time.perf_counter()
    with anyio.fail_after(10):
        pass
    t2 = time.perf_counter()
    print((t1 - t0) * 1e6, (t2 - t1) * 1e6, len(set(sys.modules) - before))

asyncio.run(main())
"""


def first_fail_after(runs: int) -> None:
    first, second, modules = [], [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _FIRST_FAIL_AFTER], check=True, capture_output=True, text=True)
        a, b, m = out.stdout.split()
        first.append(float(a))
        second.append(float(b))
        modules.append(int(m))
    print(f"first anyio.fail_after in a fresh process ({runs} subprocesses; `import anyio` already done):")
    print(f"  first call  : median {statistics.median(first):9.1f} µs   min {min(first):9.1f} µs")
    print(f"  second call : median {statistics.median(second):9.1f} µs   min {min(second):9.1f} µs")
    print(f"  modules imported by the first call: {statistics.median(modules):.0f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="rounds per mechanism (median and min are reported)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the calls per round (0.1 for a smoke run)")
    parser.add_argument("--subprocesses", type=int, default=7, help="fresh processes for the first fail_after")
    args = parser.parse_args()

    print_header("cost of each mechanism, µs per call")
    started = time.perf_counter()
    samples = run_sync(args.scale, args.rounds) + asyncio.run(run_async(args.scale, args.rounds))
    print_table(samples)
    first_fail_after(args.subprocesses)
    print(f"# total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
