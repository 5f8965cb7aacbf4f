"""The scratch quota check after each invocation, against the files a context keeps in `tmp`.

    python benchmarks/scratch_quota.py [--rounds 11] [--round-seconds 0.1]

For 0, 100, 1,000 and 10,000 one-byte files in a context's scratch directory:
- walk: one full walk of the directory (`scratch_usage_mb`), which every invocation paid before;
- check: the check after an invocation (`scratch.Quota.check`, the same code in both isolation
  modes: in a child process it runs in the child);
- a warm `fn.invoke({})` of a no-op sync handler, `isolation="thread"` and `"process"`.
Per call, in µs: the median round, and the mean over all rounds (the amortised cost, including
the walks the check still makes when they are due). The files are dated 10 s back, as if written
by earlier invocations (a directory changed in the last second is not trusted to be unchanged).
TARGET: check and invoke flat from 0 to 10,000 files (amortised at most 2x the empty case + 2 µs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _timing import elapsed, print_header, verdict

from lambdify import Function, LambdaContext, handler
from lambdify.core.scratch import Quota, scratch_usage_mb

COUNTS = (0, 100, 1_000, 10_000)


@handler(name="scratch-thread")
def noop_thread(event: Any, context: LambdaContext) -> Any:
    return str(context.tmp) if event else None


@handler(name="scratch-process", isolation="process")
def noop_process(event: Any, context: LambdaContext) -> Any:
    return str(context.tmp) if event else None


def fill(path: Path, count: int) -> None:
    """`count` files in `path` in all, the directory dated 10 s back."""
    for i in range(len(os.listdir(path)), count):
        (path / f"f{i:05}").write_bytes(b"x")
    old = time.time_ns() - 10 * 10**9
    os.utime(path, ns=(old, old))


def calls_per_round(call: Callable[[], object], seconds: float) -> int:
    # The fastest of a few batches: a batch that happened to walk must not shrink the rounds.
    return max(1, int(seconds / max(min(elapsed(call, 10) for _ in range(5)) / 10, 1e-9)))


def rounds_of(call: Callable[[], object], n: int, rounds: int) -> tuple[float, float]:
    """(median, mean) µs per call over `rounds` rounds of `n` calls."""
    per_call = [elapsed(call, n) / n * 1e6 for _ in range(rounds)]
    return statistics.median(per_call), statistics.fmean(per_call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=11, help="rounds per measurement (default 11)")
    parser.add_argument("--round-seconds", type=float, default=0.1, help="length of a round (default 0.1)")
    args = parser.parse_args()
    print_header("scratch quota: per-invocation cost against the files in a context's tmp")
    functions: list[Function[Any]] = [noop_thread, noop_process]
    dirs = [Path(fn.invoke({"tmp": True})) for fn in functions]
    columns = ("walk", "check", 'invoke "thread"', 'invoke "process"')
    print(f"{'files':>6}" + "".join(f"  {c + ' median/mean µs':>32}" for c in columns))
    results: dict[int, list[tuple[float, float]]] = {}
    for count in COUNTS:
        # Calibrated before the files are added, so that the walk that finds them (the first
        # check after a change) falls in the measured rounds, as the later walks may.
        calls = [Quota(dirs[0], 512).check, *(lambda fn=fn: fn.invoke({}) for fn in functions)]
        sizes = [calls_per_round(call, args.round_seconds) for call in calls]
        for path in dirs:
            fill(path, count)
        row = [rounds_of(lambda: scratch_usage_mb(dirs[0]), 1, 3)]
        row += [rounds_of(call, n, args.rounds) for call, n in zip(calls, sizes, strict=True)]
        results[count] = row
        print(f"{count:>6}" + "".join(f"  {median:>21.2f} / {mean:>8.2f}" for median, mean in row))
    for fn in functions:
        fn.shutdown()
    print()
    for i, column in enumerate(columns[1:], start=1):
        empty, full = results[0][i][1], results[COUNTS[-1]][i][1]
        judged = verdict(full, 2 * empty + 2)
        print(f"{column:<18}: amortised {empty:8.2f} µs empty, {full:8.2f} µs with {COUNTS[-1]:,} files  {judged}")


if __name__ == "__main__":
    main()
