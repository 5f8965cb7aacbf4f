"""Instructions per `fn.invoke()` of an async handler from sync code, and per
`asyncio.run_coroutine_threadsafe` hop to a loop thread, counted by callgrind:
`../shared/bench/run invoke` as a deterministic number.

    python benchmarks/invoke_instructions.py [--n 1000]      # both, under valgrind
    python benchmarks/invoke_instructions.py fn|hop --n N    # one run (what valgrind runs)

The handler and the coroutine are the bench's (`../shared/bench/async_invoke_ratio.py`). Two
threads take part (the caller and the loop's), so the calls cannot be singled out with
`--toggle-collect`: each variant runs twice, with 200 and with 200 + `--n` calls after the
same warm-up, and the difference of the two totals over `--n` is the cost of one call, with the
interpreter's start cancelled out. `PYTHONHASHSEED=0`. User-space instructions only: the two
thread wake-ups per call happen in the kernel, alike for both variants.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from typing import Any

from _callgrind import instructions

WARM = 200


def run(which: str, n: int) -> None:
    import lambdify

    @lambdify.handler(timeout=30)
    async def fn(event: Any, context: Any) -> Any:
        return {"n": event["n"]}

    async def bare(event: Any) -> Any:
        return {"n": event["n"]}

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    for i in range(WARM):
        fn.invoke({"n": i})
        asyncio.run_coroutine_threadsafe(bare({"n": i}), loop).result()
    for i in range(n):
        if which == "fn":
            fn.invoke({"n": i})
        else:
            asyncio.run_coroutine_threadsafe(bare({"n": i}), loop).result()


def total(which: str, n: int) -> int:
    return instructions(__file__, which, "--n", str(n))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", nargs="?", choices=["fn", "hop"])
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    if args.which:
        run(args.which, args.n)
        return
    per_call = {which: (total(which, WARM + args.n) - total(which, WARM)) // args.n for which in ("fn", "hop")}
    print(f"fn.invoke (async handler)   {per_call['fn']:>9,d} instructions/call")
    print(f"run_coroutine_threadsafe    {per_call['hop']:>9,d} instructions/call")
    print(f"fn.invoke / hop: {per_call['fn'] / per_call['hop']:.3f}x the instructions")


if __name__ == "__main__":
    main()
