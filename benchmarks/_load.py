"""Shared helpers for `ab_load.py`, `instructions.py` and `http_overhead.py`; not a benchmark.

Which lambdify is measured (`lambdify_source`, `describe_lambdify`), and for `ab_load.py`: servers
(uvicorn or gunicorn, one worker, quiet) started as subprocesses on free 127.0.0.1 ports, pinned
to CPU 0 (`taskset -c 0`), checked, then loaded all at once by one `wrk` each, pinned to CPU 1.
Load only ever targets 127.0.0.1, every wrk run is bounded by its duration, and every server is
stopped (its process group, by id) at the end, even on an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
SERVER_CPU = "0"
LOAD_CPU = "1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PYTHON = sys.executable


# -- which lambdify -------------------------------------------------------------------------------


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


# -- servers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def uvicorn(target: str) -> list[str]:
    """A one-worker uvicorn (h11) serving `target` quietly on 127.0.0.1 (`{port}` filled in by `start`)."""
    return [
        PYTHON, "-m", "uvicorn", target, "--host", HOST, "--port", "{port}",
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def gunicorn(target: str, worker: list[str]) -> list[str]:
    """A one-worker gunicorn serving `target` quietly on 127.0.0.1 with the worker options `worker`."""
    return [PYTHON, "-m", "gunicorn", "-w", "1", *worker, "-b", f"{HOST}:{{port}}", "--log-level", "warning", target]


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else argv


def server_env(extra_path: str | None = None) -> dict[str, str]:
    """The servers' environment: this one without LAMBDIFY_* settings (defaults are measured)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDIFY_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    return env


@dataclass
class Server:
    label: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"


def start(label: str, argv: list[str], cwd: Path, env: dict[str, str]) -> Server:
    port = free_port()
    log = cwd / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            pinned(SERVER_CPU, [a.replace("{port}", str(port)) for a in argv]),
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(label, port, proc, log)


def check(server: Server) -> None:
    """Poll until the server answers `GET /` with 200 and `hello`; fail if it exits or takes too long."""
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.label}: server exited:\n{server.log.read_text()[-3000:]}")
        try:
            with socket.create_connection((HOST, server.port), timeout=2.0) as sock:
                sock.sendall(request)
                data = b"".join(iter(lambda: sock.recv(65536), b""))
            status = int(data.split(b" ", 2)[1])
        except (OSError, IndexError, ValueError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.label}: no answer in {START_TIMEOUT} s") from None
            time.sleep(0.1)
            continue
        if status != 200 or b"hello" not in data:
            raise RuntimeError(f"{server.label}: unexpected answer {data[:300]!r}")
        return


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


# -- wrk ------------------------------------------------------------------------------------------


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `apt-get update && apt-get install -y wrk`")


def wrk_rps(out: str) -> float:
    match = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    if match is None:
        raise ValueError(f"wrk output lacks Requests/sec:\n{out}")
    return float(match.group(1))


def loaded_together(
    cwd: Path, servers: Sequence[tuple[str, list[str], dict[str, str]]], duration: float, connections: int = 16
) -> list[float]:
    """Start each (label, argv, environment), load them all at the same time, each with its own
    `wrk -t1` pinned to LOAD_CPU (1 s of warm-up, then `duration` s measured); their req/s."""
    started: list[Server] = []
    try:
        for label, argv, env in servers:
            started.append(start(label, argv, cwd, env))
            check(started[-1])
        rps: list[float] = []
        for seconds in (1.0, duration):  # warm-up, then the measured run
            wrk = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
            runs = [
                subprocess.Popen(pinned(LOAD_CPU, [*wrk, server.url]), stdout=subprocess.PIPE, text=True)
                for server in started
            ]
            rps = [wrk_rps(run.communicate(timeout=seconds + 30)[0]) for run in runs]
        return rps
    finally:
        for server in started:
            stop(server)
