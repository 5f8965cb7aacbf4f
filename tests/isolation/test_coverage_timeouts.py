"""Timeouts of sync handlers while a tracer is active (coverage, a debugger, a profiler).

On CPython 3.11 an asynchronous exception that is pending makes every traced thread spin at each
Python call until the target thread takes it (coveragepy #1626); a handler blocked in `sleep` or
`recv` takes it only when that call returns. Each case runs in a fresh interpreter, so that a
regression shows as numbers instead of a hung test run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually

from lambdify import InvocationTimeout, handler

_SCRIPT = textwrap.dedent(
    """
    import json, os, socket, sys, threading, time

    from lambdify import InvocationTimeout, handler

    body, tracer = sys.argv[1], sys.argv[2]
    if tracer == "settrace":
        def trace(frame, event, arg):
            return trace
        threading.settrace(trace)
        sys.settrace(trace)
    elif tracer == "setprofile":
        def profile(frame, event, arg):
            return None
        threading.setprofile(profile)
        sys.setprofile(profile)

    unwound = threading.Event()

    @handler(timeout=0.5, name="stuck")
    def stuck(event, context):
        try:
            if body == "sleep":
                time.sleep(10)
            elif body == "recv":
                left, right = socket.socketpair()
                left.recv(1)  # nothing ever arrives
            else:
                while True:
                    pass
        finally:
            unwound.set()

    def nothing():
        return None

    def alive():  # abandoned threads still in their call, 3 s after the timeout at most
        give_up = time.monotonic() + 3
        while stuck.stats()["abandoned_threads_alive"] and time.monotonic() < give_up:
            time.sleep(0.01)
        return stuck.stats()["abandoned_threads_alive"]

    wall, cpu = time.monotonic(), time.thread_time()
    try:
        stuck.invoke({})
    except InvocationTimeout:
        timed_out = True
    else:
        timed_out = False
    answered, caller_cpu = time.monotonic() - wall, time.thread_time() - cpu
    started = time.monotonic()
    for _ in range(1000):  # Python calls on the caller's thread while the handler is still stuck
        nothing()
    calls = time.monotonic() - started
    result = {
        "tracer": sys.gettrace() is not None or sys.getprofile() is not None,
        "timed_out": timed_out,
        "answered": answered,
        "caller_cpu": caller_cpu,
        "calls": calls,
        "unwound": unwound.wait(5) if body == "spin" else None,
        "alive": alive() if body == "spin" else stuck.stats()["abandoned_threads_alive"],
        "abandoned": stuck.stats()["abandoned_threads"],
    }
    print(json.dumps(result), flush=True)
    os._exit(0)  # without waiting for a thread that is still blocked
    """
)


def _run(tmp_path: Path, body: str, tracer: str) -> dict[str, Any]:
    script = tmp_path / "stuck.py"
    script.write_text(_SCRIPT)
    runner = [sys.executable]
    if tracer == "coverage":
        runner += ["-m", "coverage", "run", f"--data-file={tmp_path / '.coverage'}"]
    completed = subprocess.run(
        [*runner, str(script), body, tracer], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("tracer", ["coverage", "settrace", "setprofile"])
@pytest.mark.parametrize("body", ["sleep", "recv", "spin"])
def test_a_sync_timeout_holds_under_a_tracer(tmp_path: Path, body: str, tracer: str) -> None:
    result = _run(tmp_path, body, tracer)
    assert result["tracer"], "the tracer was not active"
    assert result["timed_out"]
    assert result["answered"] < 1.0, f"answered {result['answered']:.2f} s after a 0.5 s deadline"
    assert result["caller_cpu"] < 0.25, f"the caller spun: {result['caller_cpu']:.2f} s of CPU"
    assert result["calls"] < 0.5, f"1000 calls took {result['calls']:.2f} s after the timeout"
    assert result["abandoned"] == 1
    if body == "spin":
        assert result["unwound"], "the abandoned pure-Python loop was never unwound"
        assert result["alive"] == 0
    else:
        assert result["alive"] == 1  # still blocked: left to end on its own


def test_the_timeout_cases_are_the_same_without_a_tracer(tmp_path: Path) -> None:
    result = _run(tmp_path, "recv", "none")
    assert not result["tracer"]
    assert result["timed_out"] and result["answered"] < 1.0 and result["abandoned"] == 1


def test_an_abandoned_call_that_ends_after_its_event_loop_closed_is_harmless(monkeypatch: pytest.MonkeyPatch) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    release = threading.Event()

    @handler(timeout=0.2)
    def blocked(event: Any, context: Any) -> str:
        release.wait(10)
        return "late"

    async def main() -> None:
        with pytest.raises(InvocationTimeout):
            await blocked.ainvoke({})

    asyncio.run(main())  # the loop is closed before the abandoned call ends
    release.set()
    assert eventually(lambda: blocked.stats()["abandoned_threads_alive"] == 0)
    assert unraisable == []
    blocked.shutdown()
