"""`lambdify serve TARGET...` as a real subprocess (DESIGN.md §5, §7)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from servers import PORT, boto3_lambda, serve_command

ROOT = Path(__file__).resolve().parent.parent
LAMBDIFY = [sys.executable, "-m", "lambdify"]

PID = """
import os
from lambdify import handler

@handler
def pid(event, context):
    return os.getpid()
"""


def _serve(*args: str) -> list[str]:
    return [*LAMBDIFY, "serve", *args, "--port", PORT]


def test_serve_prints_urls_and_serves_http_and_invoke_api() -> None:
    with serve_command(_serve("examples/hello.py"), cwd=ROOT) as server:
        stdout, _ = server.output()
        match = re.search(r"http://\S+/hello/", stdout)
        assert match, stdout
        url = match.group(0)
        assert url == f"{server.url}/hello/"
        with httpx.Client() as client:
            response = client.get(url)
            named = client.get(url, params={"name": "Ada"})
        lambda_client = boto3_lambda(server.url)
        try:
            invoked = lambda_client.invoke(FunctionName="hello", Payload=json.dumps({"name": "Ada"}))
            payload = json.loads(invoked["Payload"].read())
            invoked["Payload"].close()
        finally:
            lambda_client.close()

    assert response.status_code == 200, response.text
    assert response.json()["message"] == "Hello, world!"
    assert named.json()["message"] == "Hello, Ada!"  # the query string reaches the handler
    assert response.headers["x-amzn-requestid"] == response.json()["request_id"]
    assert invoked["StatusCode"] == 200 and "FunctionError" not in invoked
    assert payload["message"] == "Hello, Ada!"
    assert "WARNING" not in server.stderr  # loopback: no warning about the Invoke API


def test_serve_workers_are_separate_processes(tmp_path: Path) -> None:
    (tmp_path / "pid_app.py").write_text(textwrap.dedent(PID))
    pids: set[int] = set()
    with serve_command(_serve(str(tmp_path / "pid_app.py"), "--workers", "2"), cwd=ROOT) as server:
        deadline = time.monotonic() + 30
        attempts = 0
        while len(pids) < 2 and attempts < 200 and time.monotonic() < deadline:
            attempts += 1
            # A new connection each time: the kernel hands it to whichever worker accepts first.
            with httpx.Client(timeout=10) as client:
                response = client.get(f"{server.url}/pid/", headers={"connection": "close"})
            assert response.status_code == 200, response.text
            pids.add(response.json())
            time.sleep(0.01)
    assert len(pids) == 2, f"one worker answered all {attempts} requests: {pids}"
    assert server.proc.pid not in pids  # the workers, not the supervising process


@pytest.mark.parametrize(
    "target",
    ["no_such_file.py", "no_such_module_xyz:fn", "examples/hello.py:nothing", "lambdify:handler"],
    ids=["missing-file", "missing-module", "missing-attribute", "not-a-function"],
)
def test_serve_unloadable_target_exits_2(target: str) -> None:
    result = subprocess.run(
        [*LAMBDIFY, "serve", target, "--port", "1"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert target.split(":")[0] in lines[0]


def test_serve_warns_when_not_on_loopback() -> None:
    # Binds every interface for a moment (the test itself only talks to 127.0.0.1).
    with serve_command(_serve("examples/hello.py", "--host", "0.0.0.0"), cwd=ROOT) as server:
        _, stderr = server.output()
    warning = [line for line in stderr.splitlines() if "WARNING" in line]
    assert warning, stderr
    assert "0.0.0.0" in warning[0] and "Invoke API" in warning[0] and "authentication" in warning[0]


def test_serve_stops_cleanly_on_sigterm() -> None:
    with serve_command(_serve("examples/hello.py"), cwd=ROOT) as server, httpx.Client() as client:
        assert client.get(f"{server.url}/hello/").status_code == 200
        returncode = server.stop(signal.SIGTERM, timeout=15)
    assert returncode in (0, -signal.SIGTERM), server.stderr
    assert "Traceback" not in server.stderr, server.stderr
    assert "Finished server process" in server.stderr
