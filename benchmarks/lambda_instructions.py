"""Instructions per API Gateway v2 event through `lambda_handler` and through Mangum, counted by
callgrind: `../shared/bench/run lambda` as a deterministic number.

    python benchmarks/lambda_instructions.py [--n 1000]           # both, under valgrind
    python benchmarks/lambda_instructions.py lambdify|mangum --n N  # one run (what valgrind runs)

The app is the bench's Starlette hello (`../shared/bench/apps.py`), the event the bench's own
(`bench_lambda.V2_EVENT`), each call given a fresh deep copy made beforehand, as the bench does;
only the calls are counted (`--toggle-collect=map_next`), with `PYTHONHASHSEED=0`.
"""

from __future__ import annotations

import argparse
import collections
import copy
import itertools
import os
import sys

from _callgrind import instructions

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "..", "shared", "bench")


def run(which: str, n: int) -> None:
    os.environ.setdefault("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")  # as `run lambda` sets it
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", "bench")
    sys.path.insert(0, BENCH)
    import apps  # type: ignore[import-not-found]
    import bench_lambda  # type: ignore[import-not-found]
    from fake_context import FakeContext  # type: ignore[import-not-found]

    if which == "mangum":
        from mangum import Mangum

        handler = Mangum(apps.make_bare(), lifespan="off")
    else:
        import lambdify

        handler = lambdify.lambda_handler(apps.make_bare())
    context = FakeContext()
    for _ in range(300):
        handler(copy.deepcopy(bench_lambda.V2_EVENT), context)
    events = [copy.deepcopy(bench_lambda.V2_EVENT) for _ in range(n)]
    collections.deque(map(handler, events, itertools.repeat(context)), 0)  # the counted part


def count(which: str, n: int) -> int:
    return instructions(__file__, which, "--n", str(n), toggle="map_next") // n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", nargs="?", choices=["lambdify", "mangum"])
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    if args.which:
        run(args.which, args.n)
        return
    counts = {which: count(which, args.n) for which in ("lambdify", "mangum")}
    for which, per_event in counts.items():
        print(f"{which:9s} {per_event:>9,d} instructions/event")
    print(f"lambda_handler / Mangum: {counts['lambdify'] / counts['mangum']:.3f}x the instructions")


if __name__ == "__main__":
    main()
