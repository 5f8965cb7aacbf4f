"""`lambdify serve FILE --isolation process` as a real subprocess (DESIGN.md §3, §7)."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from servers import PORT, boto3_lambda, serve_command

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")

PID_APP = """
import os
from lambdify import handler

@handler
def pid(event, context):
    return os.getpid()
"""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name ([state, ppid, ...]), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _ppid(pid: int) -> int:
    fields = _stat(pid)
    assert fields is not None, f"process {pid} does not exist"
    return int(fields[1])


def _dead(pid: int, timeout: float) -> bool:
    """Whether the process is gone (or a zombie left to PID 1) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        fields = _stat(pid)
        if fields is None or fields[0] == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def test_serve_with_process_isolation_runs_handlers_in_children_that_end_with_the_server(tmp_path: Path) -> None:
    (tmp_path / "pid_app.py").write_text(textwrap.dedent(PID_APP))
    command = [sys.executable, "-m", "lambdify", "serve", "pid_app.py", "--isolation", "process", "--port", PORT]
    with serve_command(command, cwd=tmp_path) as server:
        with httpx.Client(timeout=30) as client:
            first = client.get(f"{server.url}/pid/")
            second = client.get(f"{server.url}/pid/")
        lambda_client = boto3_lambda(server.url)
        try:
            invoked = lambda_client.invoke(FunctionName="pid", Payload=b"{}")
            from_boto3 = json.loads(invoked["Payload"].read())
            invoked["Payload"].close()
        finally:
            lambda_client.close()
        assert first.status_code == 200, first.text
        assert second.status_code == 200, second.text
        children = {first.json(), second.json(), from_boto3}
        templates = {_ppid(child) for child in children}
        template_parents = {_ppid(template) for template in templates}
        server.stop(signal.SIGTERM)

    assert server.returncode in (0, -signal.SIGTERM), server.stderr  # uvicorn re-raises the signal it caught
    assert "Finished server process" in server.stderr
    assert "FunctionError" not in invoked and invoked["StatusCode"] == 200
    assert server.proc.pid not in children and os.getpid() not in children
    assert first.json() == second.json()  # warm: one child served both requests
    assert template_parents == {server.proc.pid}  # forked by the server's fork template
    for pid in children | templates:
        assert _dead(pid, 5.0), f"process {pid} outlived the server"
    assert "Traceback" not in server.stderr, server.stderr
