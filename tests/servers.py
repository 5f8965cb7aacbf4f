"""Real servers for tests: a uvicorn (or `lambdify serve`) subprocess on a free 127.0.0.1 port.

Modelled on uvicorn's `tests/utils.py::run_server`, but in a subprocess, so that signals,
workers and shutdown are the real thing:

```python
with serve("app:app", cwd=tmp_path) as server:
    httpx.get(server.url + "/hello/")
assert "Traceback" not in server.stderr      # output is collected once the process has exited
```
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
PORT = "{port}"  # placeholder in a `serve_command` command line, replaced by the chosen port
START_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running server process; `stdout`/`stderr`/`returncode` are filled in by `stop()`."""

    proc: subprocess.Popen[bytes]
    port: int
    _out: IO[bytes] = field(repr=False)
    _err: IO[bytes] = field(repr=False)
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def output(self) -> tuple[str, str]:
        """What the process has written so far (stdout, stderr), without stopping it."""
        return _read(self._out), _read(self._err)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `sig`, wait up to `timeout` (then SIGKILL), collect the output; idempotent."""
        if self.returncode is None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.returncode = self.proc.returncode
            self.stdout, self.stderr = self.output()
            self._out.close()
            self._err.close()
        return self.returncode


def _read(file: IO[bytes]) -> str:
    file.flush()
    file.seek(0)
    return file.read().decode("utf-8", "replace")


def _environ(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ)
    merged["PYTHONUNBUFFERED"] = "1"
    merged.update(env or {})
    return merged


def _start(command: Sequence[str], cwd: str | Path | None, env: Mapping[str, str] | None) -> Server:
    """Start `command` (with PORT replaced by a free port) and wait until the port accepts connections."""
    port = free_port()
    argv = [part.replace(PORT, str(port)) for part in command]
    out = tempfile.TemporaryFile()  # files, not pipes: a chatty server never blocks on a full pipe
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, cwd=cwd, env=_environ(env), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    server = Server(proc=proc, port=port, _out=out, _err=err)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.05)
    server.stop(signal.SIGKILL)
    raise ServerNotStarted(argv, server)


class ServerNotStarted(RuntimeError):
    """The server exited, or did not accept connections within START_TIMEOUT."""

    def __init__(self, argv: Sequence[str], server: Server) -> None:
        super().__init__(
            f"{' '.join(argv)} did not start (exit status {server.returncode}):\n"
            f"--- stdout\n{server.stdout}\n--- stderr\n{server.stderr}"
        )
        self.server = server


@contextlib.contextmanager
def serve_command(
    command: Sequence[str], *, cwd: str | Path | None = None, env: Mapping[str, str] | None = None, attempts: int = 3
) -> Iterator[Server]:
    """Run `command` (which names its port as the `PORT` placeholder) for the duration of the block.

    A free port can be taken by someone else between our probe and the server's bind, so a
    server that exits before listening is retried on a new port (`attempts` in all).
    """
    for attempt in range(attempts):
        try:
            server = _start(command, cwd, env)
            break
        except ServerNotStarted as exc:
            if attempt == attempts - 1 or "address already in use" not in exc.server.stderr.lower():
                raise
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def serve(
    app_spec: str,
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    factory: bool = False,
) -> Iterator[Server]:
    """`python -m uvicorn APP_SPEC` on a free 127.0.0.1 port for the duration of the block."""
    command = [sys.executable, "-m", "uvicorn", app_spec, "--host", HOST, "--port", PORT, "--log-level", "warning"]
    if factory:
        command.append("--factory")
    with serve_command([*command, *args], cwd=cwd, env=env) as server:
        yield server


def boto3_lambda(url: str) -> Any:
    """A boto3 Lambda client for a lambdify server (dummy credentials, no retries). Close it after use."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "lambda",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 0}, read_timeout=30),
    )
