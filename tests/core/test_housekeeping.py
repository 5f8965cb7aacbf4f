"""One housekeeping thread per process: deadlines, idle expiry and late unwinding on one heap."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from helpers import eventually

from lambdify import ExecutionContext, LambdaContext, handler
from lambdify.core import housekeeping


class _Chore(housekeeping.Chore):
    def __init__(self, every: float = math.inf, times: int = 1) -> None:
        super().__init__()
        self.ran: list[float] = []
        self.every = every
        self.times = times

    def run(self, now: float) -> float:
        self.ran.append(now)
        return now + self.every if len(self.ran) < self.times else math.inf


def test_a_chore_runs_at_its_time_and_the_thread_stops_when_nothing_is_left() -> None:
    hk = housekeeping.Housekeeping()
    chore = _Chore(every=0.02, times=3)
    start = time.monotonic()
    hk.schedule(chore, start + 0.05)
    assert hk.starts == 1
    assert eventually(lambda: len(chore.ran) == 3, within=5.0)
    assert chore.ran[0] >= start + 0.05
    assert all(later - earlier >= 0.02 for earlier, later in itertools.pairwise(chore.ran))
    assert eventually(lambda: hk.ident is None, within=5.0)  # nothing scheduled, no pool held
    assert chore.due == math.inf
    assert hk.starts == 1


def test_a_later_time_than_the_chores_due_costs_nothing() -> None:
    hk = housekeeping.Housekeeping()
    chore = _Chore()
    at = time.monotonic() + 30
    hk.schedule(chore, at)
    heap = list(hk._heap)
    for k in range(100):
        hk.schedule(chore, at + k)  # (what a request's deadline after the earliest one does)
    assert hk._heap == heap
    assert chore.due == at
    hk.schedule(chore, time.monotonic() + 0.01)  # brought forward: runs then, once
    assert eventually(lambda: chore.ran, within=5.0)
    time.sleep(0.05)
    assert len(chore.ran) == 1
    assert eventually(lambda: hk.ident is None, within=5.0)  # the entry at `at` was dropped: nothing left
    assert hk.starts == 1


def test_a_held_owner_keeps_the_thread_until_it_closes() -> None:
    class Owner:
        closed = False

    hk = housekeeping.Housekeeping()
    owner = Owner()
    hk.hold(owner)
    chore = _Chore()
    hk.schedule(chore, time.monotonic())
    assert eventually(lambda: chore.ran, within=5.0)
    time.sleep(0.05)
    assert hk.ident is not None  # nothing scheduled, but a pool is open: kept for the next request
    hk.schedule(chore, time.monotonic())
    assert eventually(lambda: len(chore.ran) == 2, within=5.0)
    assert hk.starts == 1
    owner.closed = True
    hk.poke()
    assert eventually(lambda: hk.ident is None, within=5.0)


def test_a_chore_scheduled_while_it_runs_runs_again() -> None:
    hk = housekeeping.Housekeeping()
    inside = threading.Event()
    go_on = threading.Event()

    class Slow(_Chore):
        def run(self, now: float) -> float:
            self.ran.append(now)
            if len(self.ran) == 1:
                inside.set()
                go_on.wait(5)
            return math.inf

    chore = Slow()
    hk.schedule(chore, time.monotonic())
    assert inside.wait(5)
    hk.schedule(chore, time.monotonic())  # (a deadline added while the thread looks at the others)
    go_on.set()
    assert eventually(lambda: len(chore.ran) == 2, within=5.0)


def test_a_forked_child_starts_its_own_thread_on_demand() -> None:
    hk = housekeeping._housekeeping
    chore = _Chore()
    hk.schedule(chore, time.monotonic() + 60)  # pending in the parent: the child forgets it
    assert hk.ident is not None
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (Python >= 3.12: fork() with threads running)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = hk.ident is None and hk.starts == 0 and chore.due == math.inf
        hk.schedule(chore, time.monotonic())
        ok = ok and eventually(lambda: chore.ran, within=5.0) and hk.starts == 1
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not chore.ran  # (nor did the child's run reach the parent's schedule)
    hk.schedule(chore, time.monotonic())  # brought forward: off the parent's schedule too
    assert eventually(lambda: chore.ran, within=5.0)


def test_an_idle_context_is_retired_close_to_idle_ttl() -> None:
    retired: list[float] = []

    def setup(ctx: ExecutionContext) -> None:
        ctx.on_shutdown(lambda: retired.append(time.monotonic()))

    @handler(init=setup, idle_ttl=0.5)
    def fn(event: Any, context: LambdaContext) -> None:
        return None

    try:
        fn.invoke({})
        idle_since = time.monotonic()
        assert eventually(lambda: retired, within=10.0)
    finally:
        fn.shutdown()
    assert 0.45 <= retired[0] - idle_since < 1.0  # (not at some coarse interval after it)


STARTS = """
import asyncio, json, os, sys, time
from lambdify import handler
from lambdify.core import housekeeping

def threads():
    return len(os.listdir("/proc/self/task"))

@handler(timeout=0.2, idle_ttl=0.2)
async def fn(event, context):
    return event

async def main():
    for k in range(300):  # past the timeout and the idle TTL: deadlines and idle expiry come due meanwhile
        assert await fn.ainvoke(k) == k
        await asyncio.sleep(0.001)
    alive = housekeeping._housekeeping.ident is not None
    await fn.ashutdown()
    return alive

before = threads()
alive = asyncio.run(main())
deadline = time.monotonic() + 3
while (housekeeping._housekeeping.ident is not None or threads() > before) and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"starts": housekeeping._housekeeping.starts, "alive": alive,
                  "left": housekeeping._housekeeping.ident is not None, "before": before, "after": threads()}))
"""


def test_requests_start_the_thread_once_and_shutdown_ends_it() -> None:
    # In a fresh interpreter: another test's open pools would keep a thread of this one's.
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", STARTS],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["starts"] == 1
    assert report["alive"]
    assert not report["left"]
    assert report["after"] <= report["before"]
