"""Shared helpers for the HTTP load benchmarks (`http_serving.py`, `middleware.py`); not a benchmark.

Each variant is a real server (uvicorn or gunicorn, one worker, quiet) started as a subprocess
on a free 127.0.0.1 port and pinned to CPU 0 (`taskset -c 0`); the load generator is `wrk`
pinned to CPU 1. The servers run in a temporary directory that holds the apps' modules and a
snapshot of the lambdify package taken at the start, so every round measures the same code.
Each variant is first started once and checked (status and body). Then, round after round,
each variant gets a fresh server process: checked, warmed up with wrk, measured with wrk,
stopped; only one server runs at a time, and the order rotates each round (A B C, B C A, ...)
so that no variant always runs first or last. Before each round the run waits (briefly) for
the machine to be idle, and for every wrk run it records how much CPU the server and everything
else used. Every number reported is a median over the rounds; ratios are against a baseline
measured in the same run. Load only ever targets 127.0.0.1, every wrk run is bounded by its
duration (and killed past it), and every server is stopped at the end, even on an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
SERVER_CPU = "0"
LOAD_CPU = "1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PYTHON = sys.executable


# -- servers --------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One server to load: `argv` (with `{port}` in it), the path to request and an optional wrk lua script."""

    label: str
    short: str  # a few letters, for the per-round progress lines
    argv: list[str]
    path: str = "/"
    lua: str | None = None  # wrk script text (e.g. for POST)
    expect_status: int = 200
    expect_body: bytes | None = None  # substring the checked response body must contain
    check_request: bytes | None = None  # raw request used for the check (default: GET path)


@dataclass
class Server:
    variant: Variant
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    lua_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.variant.path}"


def uvicorn(target: str, extra: list[str]) -> list[str]:
    """A one-worker uvicorn serving `target` quietly on 127.0.0.1 (`{port}` filled in by `start`)."""
    return [
        PYTHON, "-m", "uvicorn", target, "--host", HOST, "--port", "{port}",
        "--log-level", "warning", "--no-access-log", *extra,
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else argv


def server_env(extra_path: str | None = None) -> dict[str, str]:
    """The servers' environment: this one without LAMBDIFY_* settings (defaults are measured)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDIFY_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    return env


def http_exchange(port: int, raw_request: bytes, timeout: float = 2.0) -> tuple[int, bytes]:
    """Send one raw HTTP/1.1 request (with `Connection: close`) and return (status, body)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(raw_request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()


def post_request(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def start(variant: Variant, cwd: Path, env: dict[str, str]) -> Server:
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in variant.argv]
    log = cwd / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            pinned(SERVER_CPU, argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(variant, port, proc, log)
    if variant.lua is not None:
        server.lua_path = cwd / f"wrk-{port}.lua"
        server.lua_path.write_text(variant.lua)
    return server


def wait_ready(server: Server) -> tuple[int, bytes]:
    """Poll until the server answers the variant's check request; return (status, body)."""
    request = server.variant.check_request or get_request(server.variant.path)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.variant.label}: server exited:\n{server.log.read_text()[-3000:]}")
        try:
            return http_exchange(server.port, request)
        except (OSError, IndexError, ValueError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.variant.label}: no answer in {START_TIMEOUT} s") from None
            time.sleep(0.1)


def stop(server: Server) -> None:
    proc = server.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own session: the server and its workers
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def check(server: Server) -> tuple[int, bytes]:
    """Wait for the server, then check that it answers as the variant expects."""
    status, body = wait_ready(server)
    v = server.variant
    if status != v.expect_status or (v.expect_body is not None and v.expect_body not in body):
        raise RuntimeError(f"{v.label}: unexpected answer {status} {body[:200]!r}")
    return status, body


@dataclass
class Slot:
    """One variant's results over the rounds (each round on a fresh server process)."""

    variant: Variant
    samples: list[WrkResult] = field(default_factory=list)
    output: str = ""  # what the last server printed (should be nothing)


@dataclass
class Bench:
    cwd: Path
    env: dict[str, str]
    slots: list[Slot]


def lambdify_source() -> Path:
    spec = importlib.util.find_spec("lambdify")
    if spec is None or spec.origin is None:
        raise RuntimeError("lambdify is not importable")
    return Path(spec.origin).parent


def source_digest(package: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def describe_lambdify(package: Path) -> str:
    """Where the measured lambdify comes from: git commit, whether lambdify/ differs from it, a digest."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=package.parent, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else "?"

    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", package.name)
    state = "lambdify/ as committed" if not dirty else "lambdify/ with uncommitted changes"
    return f"git {head}, {state}, sources sha256 {source_digest(package)}"


@contextlib.contextmanager
def running(variants: Sequence[Variant], env: dict[str, str], files: dict[str, str]) -> Iterator[Bench]:
    """Write `files` (the apps' modules) and a snapshot of the lambdify package to a fresh directory
    (the servers run there, so every round measures the same code even if the working tree changes
    meanwhile); start each variant's server once to check that it answers as expected; report what
    the servers printed at the end."""
    with tempfile.TemporaryDirectory(prefix="lambdify-bench-") as tmp:
        cwd = Path(tmp)
        for name, text in files.items():
            (cwd / name).write_text(text)
        package = lambdify_source()
        shutil.copytree(package, cwd / "lambdify", ignore=shutil.ignore_patterns("__pycache__"))
        print(f"#   lambdify measured: a snapshot of {package} ({describe_lambdify(package)})")
        bench = Bench(cwd, env, [Slot(v) for v in variants])
        try:
            for slot in bench.slots:
                server = start(slot.variant, cwd, env)
                try:
                    status, body = check(server)
                finally:
                    stop(server)
                print(f"#   checked: {slot.variant.label:<38} {status} {body[:60]!r}")
            yield bench
        finally:
            print(f"# load average after the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
            if source_digest(package) != source_digest(cwd / "lambdify"):
                print(f"# note: {package} changed during the run; the snapshot taken at the start was measured")
            for slot in bench.slots:
                if slot.output.strip():
                    print(f"# server output of {slot.variant.label} (last 1500 chars):")
                    for line in slot.output.strip()[-1500:].splitlines():
                        print(f"#   {line}")


# -- wrk ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    server_cpu: float = 0.0  # CPUs the server used during the run (1.0 = its whole CPU)
    other_cpu: float = 0.0  # CPUs used by everything but the server and wrk (others' work, steal)

    @property
    def cpu_us(self) -> float:
        """Server CPU time per request, µs: far less disturbed by other work than req/s is."""
        return self.server_cpu * 1e6 / self.rps if self.rps else float("nan")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> WrkResult:
    def find(pattern: str) -> str:
        match = re.search(pattern, out, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{out}")
        return match.group(1)

    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        rps=float(find(r"^Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(find(r"^\s+50%\s+(\S+)")),
        p99_ms=_ms(find(r"^\s+99%\s+(\S+)")),
        requests=int(find(r"^\s+(\d+) requests in")),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def wrk_argv(server: Server | None, threads: int, connections: int, duration: float) -> list[str]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    if server is None:
        return [*argv, "[-s post.lua]", "URL"]
    if server.lua_path is not None:
        argv += ["-s", str(server.lua_path)]
    return [*argv, server.url]


def loaded_together(
    cwd: Path, servers: Sequence[tuple[Variant, dict[str, str]]], duration: float, connections: int = 16
) -> list[float]:
    """Start each (variant, environment), load them all at the same time, each with its own
    `wrk -t1` pinned to LOAD_CPU (1 s of warm-up, then `duration` s measured); their req/s."""
    started: list[Server] = []
    try:
        for variant, env in servers:
            started.append(start(variant, cwd, env))
            check(started[-1])
        rps: list[float] = []
        for seconds in (1.0, duration):  # warm-up, then the measured run
            runs = [
                subprocess.Popen(
                    pinned(LOAD_CPU, wrk_argv(server, 1, connections, seconds)), stdout=subprocess.PIPE, text=True
                )
                for server in started
            ]
            rps = [parse_wrk(run.communicate(timeout=seconds + 30)[0]).rps for run in runs]
        return rps
    finally:
        for server in started:
            stop(server)


_TICK = os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU-seconds the whole machine has been busy (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def group_cpu(pgid: int) -> float:
    """CPU-seconds used so far by the processes of process group `pgid` (a server and its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                rest = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[2]) == pgid:  # fields after the command: state ppid pgrp ... utime(12) stime(13)
            total += int(rest[11]) + int(rest[12])
    return total / _TICK


def run_wrk(server: Server, threads: int, connections: int, duration: float) -> WrkResult:
    argv = pinned(LOAD_CPU, wrk_argv(server, threads, connections, duration))
    busy0, server0, children0 = machine_busy(), group_cpu(server.proc.pid), _children_cpu()
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    wall = time.monotonic() - started
    busy, server_cpu, wrk_cpu = (
        machine_busy() - busy0,
        group_cpu(server.proc.pid) - server0,
        _children_cpu() - children0,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.variant.label}: server died under load:\n{server.log.read_text()[-3000:]}")
    result = parse_wrk(done.stdout)
    return dataclasses.replace(
        result, server_cpu=server_cpu / wall, other_cpu=max(0.0, busy - server_cpu - wrk_cpu) / wall
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk (and taskset), once each has been waited for
    return usage.ru_utime + usage.ru_stime


def wait_quiet(limit: float, max_wait: float) -> float:
    """Wait (at most `max_wait` s) until the machine's other work uses under `limit` CPUs over 1 s.

    Returns the last measured load. The servers are idle then, so all of it is others' work."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, t0 = machine_busy(), time.monotonic()
        time.sleep(1.0)
        load = (machine_busy() - busy0) / (time.monotonic() - t0)
        if load < limit or time.monotonic() >= deadline:
            return load


@dataclass
class Settings:
    rounds: int
    duration: float
    warmup: float
    threads: int
    connections: int
    budget: float  # seconds; the run stops (with what it has) rather than overrun
    quiet: float = 0.3  # before each round, wait until other work uses < this many CPUs ...
    quiet_wait: float = 5.0  # ... but at most this many seconds


def sample(slot: Slot, bench: Bench, s: Settings) -> WrkResult:
    """A fresh server for the variant: start, check, warm up, measure, stop."""
    server = start(slot.variant, bench.cwd, bench.env)
    try:
        check(server)
        run_wrk(server, s.threads, s.connections, s.warmup)
        return run_wrk(server, s.threads, s.connections, s.duration)
    finally:
        stop(server)
        slot.output = server.log.read_text(errors="replace")


def measure(bench: Bench, s: Settings) -> None:
    """Rounds of one fresh server per variant, the order rotated each round (A B C, B C A, C A B, ...)."""
    started = time.monotonic()
    slots = bench.slots
    per_round = None
    for round_no in range(s.rounds):
        if per_round is not None:
            projected = time.monotonic() - started + per_round + s.quiet_wait + 1
            if projected > s.budget:
                print(f"# stopping after {round_no} rounds: the next round would pass the {s.budget:g} s budget")
                break
        round_started = time.monotonic()
        load = wait_quiet(s.quiet, s.quiet_wait) if s.quiet_wait > 0 else float("nan")
        waited = time.monotonic() - round_started
        measuring = time.monotonic()
        shift = round_no % len(slots)  # rotate the order, so that no variant always runs first or last
        for slot in slots[shift:] + slots[:shift]:
            slot.samples.append(sample(slot, bench, s))
        per_round = time.monotonic() - measuring
        line = "  ".join(f"{slot.variant.short}={slot.samples[-1].rps:.0f}" for slot in slots)
        others = " ".join(f"{slot.samples[-1].other_cpu:.2f}" for slot in slots)
        print(f"#   round {round_no + 1} (idle machine load {load:.2f} CPUs after {waited:.0f} s): rps {line}")
        print(f"#     other work during each run, CPUs: {others}")


# -- reporting ------------------------------------------------------------------------------------


def med(slot: Slot, attr: str) -> float:
    return statistics.median(getattr(x, attr) for x in slot.samples)


def paired_ratio(a: Slot, b: Slot, attr: str) -> float:
    """Median over rounds of a/b within the same round (robust to drift between rounds)."""
    return statistics.median(getattr(x, attr) / getattr(y, attr) for x, y in zip(a.samples, b.samples, strict=False))


def print_table(servers: Sequence[Slot]) -> None:
    width = max(len(s.variant.label) for s in servers)
    print(
        f"| {'variant':<{width}} | median req/s | min–max req/s   | p50 ms | p99 ms | rounds | non-2xx | sock err "
        "| server CPU | CPU µs/req | others' CPU |"
    )
    print(
        f"|{'-' * (width + 2)}|-------------:|:----------------|-------:|-------:|-------:|--------:|---------:"
        "|-----------:|-----------:|------------:|"
    )
    for s in servers:
        rps = [x.rps for x in s.samples]
        print(
            f"| {s.variant.label:<{width}} | {med(s, 'rps'):12.0f} | {min(rps):6.0f}–{max(rps):<8.0f} "
            f"| {med(s, 'p50_ms'):6.2f} | {med(s, 'p99_ms'):6.2f} | {len(s.samples):6d} "
            f"| {sum(x.non_2xx for x in s.samples):7d} | {sum(x.socket_errors for x in s.samples):8d} "
            f"| {med(s, 'server_cpu'):10.2f} | {med(s, 'cpu_us'):10.1f} | {med(s, 'other_cpu'):11.2f} |"
        )
    print()


@dataclass(frozen=True)
class Target:
    label: str
    value: float
    paired: float
    limit: float
    higher_is_better: bool

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit


def rps_target(label: str, variant: Slot, base: Slot, limit: float) -> Target:
    return Target(label, med(variant, "rps") / med(base, "rps"), paired_ratio(variant, base, "rps"), limit, True)


def p99_target(label: str, variant: Slot, base: Slot, limit: float) -> Target:
    value = med(variant, "p99_ms") / med(base, "p99_ms")
    return Target(label, value, paired_ratio(variant, base, "p99_ms"), limit, False)


def cpu_target(label: str, variant: Slot, base: Slot, limit: float) -> Target:
    """base / variant server CPU per request: the throughput ratio the CPU cost alone implies."""
    value = med(base, "cpu_us") / med(variant, "cpu_us")
    return Target(label, value, 1 / paired_ratio(variant, base, "cpu_us"), limit, True)


def print_targets(targets: Sequence[Target]) -> None:
    width = max(len(t.label) for t in targets)
    print(f"| {'ratio':<{width}} | of medians | paired median | target    | verdict |")
    print(f"|{'-' * (width + 2)}|-----------:|--------------:|:----------|:--------|")
    for t in targets:
        sign = ">=" if t.higher_is_better else "<="
        verdict = ("PASS" if t.passed else "FAIL") if t.limit else "—"
        target = f"{sign} {t.limit:g}x" if t.limit else "reference"
        print(f"| {t.label:<{width}} | {t.value:9.3f}x | {t.paired:12.3f}x | {target:<9} | {verdict:<7} |")
    print()


def print_header(title: str, settings: Settings, variants: Sequence[Variant]) -> None:
    print(f"# {title}")
    print(f"# command: python {shlex.join(sys.argv)}   (python = {PYTHON})")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"# python {platform.python_version()}, {platform.platform()}; {os.cpu_count()} CPUs")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# load average before the run: {load} (other work on the machine skews every number)")
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    print(f"# load generator: {(wrk.stdout or wrk.stderr).splitlines()[0].strip()}, pinned to CPU {LOAD_CPU}")
    print(f"# servers pinned to CPU {SERVER_CPU}, one worker each, only one running at a time")
    wrk = " ".join(wrk_argv(None, settings.threads, settings.connections, settings.duration))
    print(
        f"# {settings.rounds} rounds; in each, per variant: a fresh server process, checked, warmed up with wrk for "
        f"{settings.warmup:g} s, then `{wrk}`"
    )
    print(
        f"# before each round: wait up to {settings.quiet_wait:g} s for the idle machine's load to fall below "
        f"{settings.quiet:g} CPUs; 'others' CPU' = machine busy time (incl. steal) minus server and wrk, per run"
    )
    print("# servers (cwd: a temporary directory holding the app modules listed in the script):")
    for v in variants:
        method = "POST" if v.lua else "GET"
        print(f"#   [{v.short}] {v.label:<34} taskset -c {SERVER_CPU} {' '.join(v.argv)}   ({method} {v.path})")
    print()


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `apt-get update && apt-get install -y wrk`")
