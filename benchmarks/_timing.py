"""Shared helpers for the benchmark scripts: repeated rounds, median and min, plain-text tables.

Every number is per call, in microseconds, measured with `time.perf_counter` over `n` calls in
each of `rounds` rounds; the median round is the headline and the fastest round is shown beside
it, because the reference machine (2 shared vCPUs) is noisy and the minimum is the least
disturbed round.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """Per-call cost of one measured thing, in µs, over several rounds."""

    label: str
    per_call_us: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.per_call_us)

    @property
    def min(self) -> float:
        return min(self.per_call_us)


def sample_sync(label: str, body: Callable[[int], float], n: int, rounds: int) -> Sample:
    """`body(n)` runs `n` calls and returns the seconds they took; one warm-up round is discarded."""
    body(max(1, n // 10))
    return Sample(label, tuple(body(n) / n * 1e6 for _ in range(rounds)))


AsyncBody = Callable[[int], Awaitable[float]]


async def sample_async(label: str, body: AsyncBody, n: int, rounds: int) -> Sample:
    """Like `sample_sync`, for a body that must run inside the event loop."""
    await body(max(1, n // 10))
    per_call = []
    for _ in range(rounds):
        per_call.append(await body(n) / n * 1e6)
    return Sample(label, tuple(per_call))


async def ainterleaved(variants: Sequence[tuple[str, AsyncBody, int]], rounds: int) -> list[Sample]:
    """Measure `(label, body, n)` variants round-robin inside the loop, so that noise hits them all alike."""
    for _, body, n in variants:
        await body(max(1, n // 10))
    per_call: list[list[float]] = [[] for _ in variants]
    for _ in range(rounds):
        for i, (_, body, n) in enumerate(variants):
            per_call[i].append(await body(n) / n * 1e6)
    return [Sample(label, tuple(times)) for (label, _, _), times in zip(variants, per_call, strict=True)]


async def acalibrate(body: AsyncBody, seconds: float) -> int:
    """Calls per round so that one round of `body` (run inside the event loop) takes about `seconds`.

    The first calls are discarded (they may start threads or fill caches), and the estimate is
    checked once at full size, so that a slow first call cannot shrink the rounds to a few calls.
    """
    await body(10)
    n = 1
    while (took := await body(n)) < seconds / 10 and n < 10_000_000:
        n *= 10
    n = max(1, int(n * seconds / max(took, 1e-9)))
    return max(1, int(n * seconds / max(await body(n), 1e-9)))


def verdict(value: float, limit: float) -> str:
    return "PASS" if value <= limit else "FAIL"


def print_ratio(label: str, numerator: Sample, denominator: Sample, target: float | None = None) -> None:
    """A labelled ratio of medians (judged against `target` if given), with the ratio of mins beside it."""
    value = numerator.median / denominator.median
    judged = f"target <= {target:g}x  {verdict(value, target)}" if target is not None else "for reference"
    print(f"{label:<42}: {value:7.2f}x  (min/min {numerator.min / denominator.min:.2f}x)  {judged}")


def print_header(title: str, argv: Sequence[str] | None = None) -> None:
    command = " ".join(argv if argv is not None else sys.argv)
    print(f"# {title}")
    print(f"# command: python {command}")
    spec = importlib.util.find_spec("lambdify")
    print(f"# lambdify from: {spec.origin if spec is not None else 'not importable'}")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"# python {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# {os.cpu_count()} CPUs, load average {load} (other work on the machine skews every number)")
    print()


def print_table(samples: Sequence[Sample]) -> None:
    """One row per sample: median and min µs per call."""
    width = max(len(s.label) for s in samples)
    print(f"{'':<{width}}  {'median µs':>10}  {'min µs':>10}")
    for s in samples:
        print(f"{s.label:<{width}}  {s.median:>10.3f}  {s.min:>10.3f}")
    print()


def elapsed(fn: Callable[[], object], n: int) -> float:
    """Seconds for `n` calls of `fn()`."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start
