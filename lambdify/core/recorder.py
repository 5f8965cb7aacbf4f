"""What `lambdify.stats()` tells beyond the counters: each context's state, the recent
invocations, and a latency histogram.

Recording costs one clock read per invocation (its start is the clock read that sets its
deadline anyway), a bisect, a few additions and one append to a bounded deque, all at the end
of the invocation (`_Invocation.finish`). Everything else — request ids, wall-clock times,
states — is worked out only when someone reads the statistics.

The increments are not under a lock: in CPython an `int` or `float` addition in place is not
interrupted by another thread (the interpreter switches threads only at calls and backward
jumps), and the exact counters of `fn.stats()` are kept elsewhere under the pool's lock.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from .memory import peak_rss_mb

if TYPE_CHECKING:
    from .context import ExecutionContext
    from .lambda_context import LambdaContext

__all__ = ["BOUNDS_MS", "RECENT", "Recorder", "context_entry"]

#: Upper bounds (ms, inclusive) of the latency histogram's buckets; one more bucket holds the rest.
BOUNDS_MS: Final = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0)
RECENT: Final = 50  # recent invocations kept per function
RETIRED: Final = 8  # retired contexts still shown per function
_OUTCOMES: Final = {None: "success", "errors": "error", "timeouts": "timeout", "oom": "oom"}
# Monotonic clock readings turned into wall-clock times when read (drift over a server's life is negligible).
_WALL_OFFSET: Final = time.time() - time.monotonic()


class Recorder:
    """One function's recent invocations, latency histogram, and recently retired contexts."""

    __slots__ = ("buckets", "recent", "retired", "sum_ms")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BOUNDS_MS) + 1)
        self.sum_ms = 0.0
        #: (LambdaContext, start on the monotonic clock, duration ms, failure counter or None, cold)
        self.recent: deque[tuple[LambdaContext, float, float, str | None, bool]] = deque(maxlen=RECENT)
        self.retired: deque[dict[str, Any]] = deque(maxlen=RETIRED)

    def record(self, lc: LambdaContext, started: float, ended: float, failed: str | None, cold: bool) -> None:
        """One invocation ended (called from `_Invocation.finish`)."""
        ms = (ended - started) * 1000.0
        self.buckets[bisect_left(BOUNDS_MS, ms)] += 1
        self.sum_ms += ms
        lc.execution.last_ms = ms
        self.recent.append((lc, started, ms, failed, cold))

    def context_retired(self, ctx: ExecutionContext) -> None:
        self.retired.append(context_entry(ctx, "retired", time.time(), None))

    def invocations(self, lines: Any = None) -> list[dict[str, Any]]:
        """The recent invocations, newest first; `lines(request_id)` adds each one's log lines."""
        entries = []
        for lc, started, ms, failed, cold in reversed(list(self.recent)):
            entry: dict[str, Any] = {
                "request_id": lc.aws_request_id,
                "context": lc.execution.id,
                "pid": os.getpid(),
                "start": round(started + _WALL_OFFSET, 3),
                "duration_ms": round(ms, 3),
                "outcome": _OUTCOMES.get(failed, failed),
                "cold_start": cold,
            }
            if lines is not None:
                entry["log"] = lines(entry["request_id"])
            entries.append(entry)
        return entries

    def latency(self) -> dict[str, Any]:
        """The histogram: `counts[i]` invocations took at most `bounds_ms[i]` and more than the bound
        before; the last count is for longer ones (Prometheus' buckets are these, accumulated)."""
        return {"bounds_ms": list(BOUNDS_MS), "counts": list(self.buckets), "sum_ms": round(self.sum_ms, 3)}


def context_entry(ctx: ExecutionContext, state: str, now: float, peak: float | None) -> dict[str, Any]:
    """One context as `lambdify.stats()` shows it; `peak`: the worker's peak memory (thread isolation)."""
    own_peak = ctx.peak_mb
    return {
        "id": ctx.id,
        "pid": os.getpid(),
        "state": state,
        "age_s": round(now - ctx.created_at, 3),
        "invocations": ctx.invocations,
        "provisioned": ctx.provisioned,
        "init_ms": round(ctx.init_ms, 3) if state != "init" else None,
        "last_ms": None if ctx.last_ms is None else round(ctx.last_ms, 3),
        "peak_memory_mb": round(own_peak if own_peak is not None else (peak or 0.0), 1),
    }


def state_of(ctx: ExecutionContext) -> str:
    """`busy`, `idle`, `frozen` (an idle child process, stopped) or `retired` (on its way out)."""
    if ctx.retired:
        return "retired"
    if ctx.active:
        return "busy"
    return "frozen" if getattr(ctx, "frozen", False) else "idle"


def worker_peak_mb() -> float:
    return peak_rss_mb()
