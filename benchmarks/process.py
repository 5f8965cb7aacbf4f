"""Process isolation: warm round trip, cold start, and replacing a failed child, against same-run baselines.

    python benchmarks/process.py [--rounds 21] [--round-seconds 0.05] [--cold 15] [--failures 5]

(a) warm invocation, ~140-byte JSON event echoed back: `fn.invoke(event)` with
    `isolation="process"` vs the same with `isolation="thread"`, and vs a bare round trip of the
    same JSON over a socketpair to a child process that echoes length-prefixed JSON (the
    floor for any parent/child design).        TARGET: process warm <= 1.5x bare socketpair
    Also shown: the bare round trip with its parent polling for the answer as lambdify's does
    (up to `SPIN` before it blocks), which is most of what lambdify gains over the bare one
    across two CPUs; and a warm invocation of a child that was idle long enough to be frozen
    (SIGCONT on the way in).
(b) cold start: a new context to its first result (`fn.shutdown()` then `fn.invoke`), minus
    user init (the handler module's own import time, measured inside the child), vs
    `subprocess.run([python, "-c", "import lambdify"])`.          TARGET: cold <= 0.5x spawn
    The cold path is split into phases with timestamps taken in the child (CLOCK_MONOTONIC is
    shared by all processes, and `time.perf_counter` reads it on Linux).
(c) a child that times out or crashes is replaced without the caller waiting on the kill: the
    failing call takes about the timeout (or a few ms for a crash), the next one is one cold
    start.

Warm variants are measured round-robin (calls per round calibrated to `--round-seconds`), so
the machine's noise hits them alike; every number is a median over rounds (min beside it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from _timing import Sample, print_header, print_ratio, print_table

from lambdify import FunctionError, InvocationTimeout
from lambdify.isolation.channel import SPIN

WARM_TARGET = 1.5
COLD_TARGET = 0.5
FAIL_TIMEOUT = 0.5
EVENT: dict[str, Any] = {  # 139 bytes as compact JSON
    "version": "2.0",
    "routeKey": "POST /orders",
    "rawPath": "/orders",
    "rawQueryString": "p=1",
    "body": '{"sku":1,"n":2}',
    "isBase64Encoded": False,
}

HANDLERS = """
import time

_IMPORT_STARTED = time.perf_counter()

import os

from lambdify import handler

# Handler modules are imported in the child (INIT): this module's own import time is the
# "user init" that the cold-start measurement subtracts.


@handler(isolation="process", timeout=3)
def proc_echo(event, context):
    if event.get("cold"):
        return {
            "pid": os.getpid(),
            "cold": context.cold_start,
            "import_started": _IMPORT_STARTED,
            "import_ms": IMPORT_MS,
            "handler_at": time.perf_counter(),
        }
    return event


@handler(isolation="process", timeout=3)
def proc_raw(event, context):
    return event


@handler(isolation="thread", timeout=3)
def thread_echo(event, context):
    return event


@handler(isolation="process", timeout=FAIL_TIMEOUT, name="proc_fail")
def proc_fail(event, context):
    if event.get("spin"):
        while True:
            pass
    if event.get("exit"):
        os._exit(3)
    return {"pid": os.getpid(), "cold": context.cold_start}


IMPORT_MS = (time.perf_counter() - _IMPORT_STARTED) * 1000
""".replace("FAIL_TIMEOUT", repr(FAIL_TIMEOUT))

ECHO_CHILD = """
import json, socket, struct, sys

sock = socket.socket(fileno=int(sys.argv[1]))
header = struct.Struct(">I")

def read(size):
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            sys.exit(0)
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)

while True:
    message = json.loads(read(header.unpack(read(4))[0]))
    body = json.dumps(message, separators=(",", ":")).encode()
    sock.sendall(header.pack(len(body)) + body)
"""

_HEADER = struct.Struct(">I")


class EchoChild:
    """The baseline: a child process echoing length-prefixed JSON over a socketpair."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ECHO_CHILD, str(theirs.fileno())], pass_fds=(theirs.fileno(),)
        )
        theirs.close()
        self.sock = ours

    def _read(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self.sock.recv(size)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def round_trip(self, message: Any) -> Any:
        body = json.dumps(message, separators=(",", ":")).encode()
        self.sock.sendall(_HEADER.pack(len(body)) + body)
        return json.loads(self._read(_HEADER.unpack(self._read(4))[0]))

    def round_trip_polling(self, message: Any) -> Any:
        """The same, with the parent polling for the answer for up to SPIN before it blocks, as
        lambdify's parent does while answers come that quickly."""
        body = json.dumps(message, separators=(",", ":")).encode()
        self.sock.sendall(_HEADER.pack(len(body)) + body)
        until = time.perf_counter() + SPIN
        while True:
            try:
                head = self.sock.recv(4, socket.MSG_DONTWAIT)
                break
            except BlockingIOError:
                if time.perf_counter() >= until:
                    head = self._read(4)
                    break
        if len(head) < 4:
            head += self._read(4 - len(head))
        return json.loads(self._read(_HEADER.unpack(head)[0]))

    def close(self) -> None:
        self.sock.close()
        self.proc.wait(5)


def load_handlers(directory: Path) -> ModuleType:
    (directory / "bench_process_handlers.py").write_text(textwrap.dedent(HANDLERS))
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    return importlib.import_module("bench_process_handlers")


def timed_calls(call: Callable[[Any], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call(EVENT)
    return time.perf_counter() - start


def calibrate(call: Callable[[Any], Any], seconds: float) -> int:
    timed_calls(call, 20)
    n = 10
    while (took := timed_calls(call, n)) < seconds / 5:
        n *= 5
    return max(1, int(n * seconds / took))


def interleaved(variants: list[tuple[str, Callable[[Any], Any]]], rounds: int, seconds: float) -> list[Sample]:
    sizes = [calibrate(call, seconds) for _, call in variants]
    per_call: list[list[float]] = [[] for _ in variants]
    for round_no in range(rounds):
        order = list(range(len(variants)))
        if round_no % 2:
            order.reverse()
        for i in order:
            per_call[i].append(timed_calls(variants[i][1], sizes[i]) / sizes[i] * 1e6)
    return [Sample(label, tuple(times)) for (label, _), times in zip(variants, per_call, strict=True)]


def wait_frozen(pid: int, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as file:
            if file.read().rsplit(")", 1)[1].split()[0] == "T":
                return True
        time.sleep(0.005)
    return False


# -- (a) warm ---------------------------------------------------------------------------------


def bench_warm(module: ModuleType, rounds: int, seconds: float) -> None:
    size = len(json.dumps(EVENT, separators=(",", ":")))
    print(f"## (a) warm round trip, {size}-byte JSON event echoed back")
    proc_fn, thread_fn = module.proc_echo, module.thread_echo
    echo = EchoChild()
    try:
        for call in (proc_fn.invoke, thread_fn.invoke, echo.round_trip, echo.round_trip_polling):
            assert call(EVENT) == EVENT  # cold starts outside the measurement, and a sanity check
        samples = interleaved(
            [
                ('fn.invoke(event)  [isolation="process"]', proc_fn.invoke),
                ('fn.invoke(event)  [isolation="thread"]', thread_fn.invoke),
                ("bare socketpair JSON round trip to a child", echo.round_trip),
                (f"the same, parent polls {SPIN * 1e6:.0f} µs before blocking", echo.round_trip_polling),
            ],
            rounds,
            seconds,
        )
        # After an idle gap the child is frozen (SIGSTOP) and the call thaws it; the bare round
        # trip after the same gap separates the cost of the thaw from that of a cold CPU cache.
        pid = proc_fn.invoke({"cold": True})["pid"]
        thawed, gap = [], []
        for _ in range(rounds):
            idle_from = time.perf_counter()
            if not wait_frozen(pid):
                raise RuntimeError("the idle child was not frozen")
            start = time.perf_counter()
            proc_fn.invoke(EVENT)
            thawed.append((time.perf_counter() - start) * 1e6)
            time.sleep(start - idle_from)
            start = time.perf_counter()
            echo.round_trip(EVENT)
            gap.append((time.perf_counter() - start) * 1e6)
        samples.append(Sample("fn.invoke(event)  [process, child frozen before]", tuple(thawed)))
        samples.append(Sample("bare socketpair round trip after the same idle gap", tuple(gap)))
    finally:
        echo.close()
        proc_fn.shutdown()
        thread_fn.shutdown()
    process, thread, bare, bare_polling, frozen, bare_gap = samples
    print_table(samples)
    print_ratio("process warm / bare socketpair round trip", process, bare, WARM_TARGET)
    print_ratio("process warm / bare round trip, parent polling", process, bare_polling)
    print_ratio("process warm / thread warm", process, thread)
    print_ratio("process, frozen before / bare, same gap", frozen, bare_gap)
    print(f"process warm overhead over the bare round trip: {process.median - bare.median:.1f} µs")
    print()


# -- (a') where the warm time goes ------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def profile_warm(module: ModuleType, rounds: int) -> None:
    """Split a warm process invocation into its steps. Uses lambdify's internals (the parent's
    driver, `lambdify/isolation/process.py::run_sync`, re-enacted step by step, and the child's
    channel), so it may need updating when they change; it is skipped if they moved."""
    print("## (a') where the warm time goes (re-enacting run_sync step by step; internals)")
    try:
        from lambdify.core.current import new_request_id
        from lambdify.core.invocation import _Invocation
        from lambdify.isolation.process import _answer, _done, event_json, invoke_message
    except ImportError as exc:
        print(f"skipped: {exc}\n")
        return
    fn, raw_fn = module.proc_echo, module.proc_raw
    echo = EchoChild()
    pc = time.perf_counter
    steps = ["encode event, request id", "pool.take", "_Invocation + thaw", "send invoke", "wait for answer"]
    steps += ["wait for done", "finish (limits, REPORT, release)", "total"]
    segments: dict[str, list[float]] = {step: [] for step in steps}

    def invoke_in_steps() -> None:
        t0 = pc()
        event_text = event_json(EVENT)
        request_id = new_request_id()
        t1 = pc()
        pool = fn.engine.pool(None)
        ctx, cold = pool.take(), False
        if ctx is None:
            ctx, cold = pool.acquire()
        t2 = pc()
        invocation = _Invocation(fn, ctx, request_id, cold, None)
        invocation.peak_before = float("inf")
        invocation.marshal = False
        ctx.thaw()
        t3 = pc()
        ctx.channel.send_frame(invoke_message(event_text, invocation, cold))
        t4 = pc()
        answer = ctx.channel.recv(invocation.remaining())
        result, error = _answer(answer, request_id)
        t5 = pc()
        # With nothing to flush, the child sends its "done" inside the answer (one message).
        _done(invocation, answer.get("done") or ctx.channel.recv(invocation.remaining()))
        t6 = pc()
        invocation.finish(pool, result, error)
        t7 = pc()
        for step, a, b in zip(steps, (t0, t1, t2, t3, t4, t5, t6, t0), (t1, t2, t3, t4, t5, t6, t7, t7), strict=True):
            segments[step].append((b - a) * 1e6)

    try:
        fn.invoke(EVENT)
        raw_fn.invoke(EVENT)
        pool = raw_fn.engine.pool(None)
        held, _ = pool.acquire()  # held busy, so that it is never frozen while we talk to it directly
        held.thaw()
        channel = held.channel
        message = {"op": "invoke", "event": EVENT, "request_id": new_request_id(), "remaining": 3.0, "cold": False}

        def raw_exchange(timeout: float | None) -> Callable[[Any], Any]:
            def call(event: Any) -> Any:
                channel.send(message)
                answer = channel.recv(timeout)
                if "done" not in answer:  # a separate "done" only follows when there was work to flush
                    channel.recv(timeout)
                return answer

            return call

        for _ in range(200):
            invoke_in_steps()
        for step in segments.values():
            step.clear()
        calls = max(2000, calibrate(fn.invoke, 0.05) * rounds // 4)
        for _ in range(calls):
            invoke_in_steps()
        width = max(len(step) for step in steps)
        print(f"fn.invoke(event), {calls} calls, each step timed:")
        print(f"{'':<{width}}  {'median µs':>10}  {'mean µs':>8}")
        for step, values in segments.items():
            print(f"{step:<{width}}  {statistics.median(values):>10.1f}  {statistics.mean(values):>8.1f}")
        print()
        samples = interleaved(
            [
                ("fn.invoke(event)", fn.invoke),
                ("child's channel: send invoke, recv answer + done (timeout)", raw_exchange(3.0)),
                ("the same, reads without a timeout", raw_exchange(None)),
                ("bare socketpair JSON round trip", echo.round_trip),
            ],
            rounds,
            0.05,
        )
        print_table(samples)
        cpu_rows = []
        for label, call, pid in (
            ("fn.invoke(event)", fn.invoke, _context_pid(fn)),
            ("bare socketpair JSON round trip", echo.round_trip, echo.proc.pid),
        ):
            n = calibrate(call, 1.0)
            own, child, start = _own_cpu(), _cpu_seconds(pid), pc()
            timed_calls(call, n)
            wall = pc() - start
            cpu_rows.append(
                (label, wall / n * 1e6, (_own_cpu() - own) / n * 1e6, (_cpu_seconds(pid) - child) / n * 1e6)
            )
        print("CPU time per call (parent: getrusage; child: /proc/<pid>/stat, 10 ms ticks over ~1 s):")
        print(f"| {'variant':<32} | wall µs | parent CPU µs | child CPU µs |")
        print(f"|{'-' * 34}|--------:|--------------:|-------------:|")
        for label, wall_us, parent_us, child_us in cpu_rows:
            print(f"| {label:<32} | {wall_us:7.1f} | {parent_us:13.1f} | {child_us:12.1f} |")
        print()
        pool.release(held)
    finally:
        echo.close()
        fn.shutdown()
        raw_fn.shutdown()


def _context_pid(fn: Any) -> int:
    pool = fn.engine.pool(None)
    ctx, _ = pool.acquire()
    pool.release(ctx)
    return int(ctx.pid)


# -- (b) cold ---------------------------------------------------------------------------------


def bench_cold(module: ModuleType, count: int) -> None:
    print(f"## (b) cold start: new context to first result, user init excluded; {count} rounds, interleaved")
    fn = module.proc_echo
    fn.invoke(EVENT)  # the fork template starts with the first context of the process: not measured here
    cold_before = fn.stats()["cold_starts"]
    cold, user_init, to_import, import_to_handler, handler_to_caller, spawn, bare_python = ([] for _ in range(7))
    try:
        for _ in range(count):
            fn.shutdown()
            start = time.perf_counter()
            result = fn.invoke({"cold": True})
            end = time.perf_counter()
            if not result["cold"]:
                raise RuntimeError("expected a cold start")
            total = (end - start) * 1000
            user_init.append(result["import_ms"])
            cold.append(total - result["import_ms"])
            to_import.append((result["import_started"] - start) * 1000)
            import_to_handler.append((result["handler_at"] - result["import_started"]) * 1000 - result["import_ms"])
            handler_to_caller.append((end - result["handler_at"]) * 1000)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import lambdify"], check=True)
            spawn.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare_python.append((time.perf_counter() - t0) * 1000)
        stats = fn.stats()
    finally:
        fn.shutdown()
    rows = [
        ("cold start, user init excluded", cold),
        ("  caller -> child starts importing the handler module", to_import),
        ("  user init (handler module import, in the child)", user_init),
        ("  module imported -> handler runs (INIT end, ready, invoke)", import_to_handler),
        ("  handler -> result back in the caller", handler_to_caller),
        ('spawn: subprocess.run([python, "-c", "import lambdify"])', spawn),
        ('for reference: subprocess.run([python, "-c", "pass"])', bare_python),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"{'':<{width}}  {'median ms':>10}  {'min ms':>8}")
    for label, values in rows:
        print(f"{label:<{width}}  {statistics.median(values):>10.2f}  {min(values):>8.2f}")
    ratio = statistics.median(cold) / statistics.median(spawn)
    verdict = "PASS" if ratio <= COLD_TARGET else "FAIL"
    print(f"\ncold start / spawn of a lambdify interpreter: {ratio:.3f}x  target <= {COLD_TARGET:g}x  {verdict}")
    counted = stats["cold_starts"] - cold_before
    print(f"stats: cold starts in the rounds {counted} (wanted {count}), errors={stats['errors']}")
    print()


def bench_first_cold(count: int, directory: Path) -> None:
    """The first context of a process also starts the fork template: measured in fresh interpreters."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(directory)!r})
        import bench_process_handlers as m
        start = time.perf_counter()
        m.proc_echo.invoke({{}})
        print((time.perf_counter() - start) * 1000)
        m.proc_echo.shutdown()
        """
    )
    firsts = []
    for _ in range(count):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        firsts.append(float(done.stdout))
    print(
        "for reference, the first cold start in a fresh process (includes starting the fork template), "
        f"{count} processes: median {statistics.median(firsts):.2f} ms, min {min(firsts):.2f} ms"
    )
    print()


def child_imports(directory: Path) -> None:
    """What a new child imports on top of the fork template (`PYTHONPROFILEIMPORTTIME=1`, which the
    template and its children inherit): each import here is paid on every cold start."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(directory)!r})
        import bench_process_handlers as m
        m.proc_echo.invoke({{}})
        m.proc_echo.shutdown()
        print("-- template ready --", file=sys.stderr, flush=True)
        m.proc_echo.invoke({{}})
        m.proc_echo.shutdown()
        """
    )
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    lines = done.stderr.split("-- template ready --", 1)[-1].splitlines()
    imports = [line for line in lines if line.startswith("import time:")]
    print("imports in a new child, beyond the template's (PYTHONPROFILEIMPORTTIME=1; µs self | cumulative | name):")
    for line in imports or ["(none)"]:
        print(f"  {line}")
    print()


# -- (c) failures -----------------------------------------------------------------------------


def bench_failures(module: ModuleType, count: int) -> None:
    print(f"## (c) a failed child is replaced without the caller waiting on it; {count} rounds each")
    fn = module.proc_fail
    rows = []
    try:
        for label, event, expected in (
            (f"timeout={FAIL_TIMEOUT:g} s (busy loop)", {"spin": True}, InvocationTimeout),
            ("crash (os._exit(3))", {"exit": True}, FunctionError),
        ):
            failing, following, warm = [], [], []
            for _ in range(count):
                fn.invoke({})  # a warm child to fail
                start = time.perf_counter()
                try:
                    fn.invoke(event)
                except expected:
                    pass
                else:
                    raise RuntimeError(f"{label}: the invocation did not fail")
                t1 = time.perf_counter()
                result = fn.invoke({})
                t2 = time.perf_counter()
                fn.invoke({})
                t3 = time.perf_counter()
                if not result["cold"]:
                    raise RuntimeError(f"{label}: the next invocation was not a cold start")
                failing.append((t1 - start) * 1000)
                following.append((t2 - t1) * 1000)
                warm.append((t3 - t2) * 1000)
            rows.append((label, failing, following, warm))
        stats = fn.stats()
    finally:
        fn.shutdown()
    print(f"| {'failure':<28} | failing call ms (median, min–max) | next call (cold) ms | the call after (warm) ms |")
    print(f"|{'-' * 30}|----------------------------------:|--------------------:|-------------------------:|")
    for label, failing, following, warm in rows:
        spread = f"{statistics.median(failing):8.2f} ({min(failing):.2f}–{max(failing):.2f})"
        print(
            f"| {label:<28} | {spread:>33} | {statistics.median(following):19.2f} | {statistics.median(warm):24.3f} |"
        )
    overshoot = statistics.median(rows[0][1]) - FAIL_TIMEOUT * 1000
    print(f"\ntimed-out call beyond its {FAIL_TIMEOUT:g} s timeout: {overshoot:.2f} ms (median)")
    print(f"stats: timeouts={stats['timeouts']}, errors={stats['errors']}, cold_starts={stats['cold_starts']}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=21, help="warm rounds (default 21)")
    parser.add_argument("--round-seconds", type=float, default=0.05, help="length of a warm round (default 0.05)")
    parser.add_argument("--cold", type=int, default=15, help="cold-start rounds (default 15)")
    parser.add_argument("--no-profile", action="store_true", help="skip (a'), the step-by-step warm profile")
    parser.add_argument("--failures", type=int, default=5, help="rounds per failure kind (default 5)")
    args = parser.parse_args()
    print_header("process isolation: warm round trip, cold start, failed children")
    with tempfile.TemporaryDirectory(prefix="lambdify-bench-") as tmp:
        module = load_handlers(Path(tmp))
        bench_warm(module, args.rounds, args.round_seconds)
        if not args.no_profile:
            profile_warm(module, args.rounds)
        bench_cold(module, args.cold)
        bench_first_cold(min(args.cold, 7), Path(tmp))
        child_imports(Path(tmp))
        bench_failures(module, args.failures)


if __name__ == "__main__":
    main()
