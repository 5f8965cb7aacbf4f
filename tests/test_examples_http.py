"""The web examples in examples/, each under a real server on a free 127.0.0.1 port, driven by real clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import HOST, PORT, Server, boto3_lambda, serve, serve_command

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _env() -> dict[str, str]:
    # The examples import lambdify (and `examples.*`) from this checkout, without the caller's options.
    env = {key: value for key, value in os.environ.items() if not key.startswith("LAMBDIFY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _request_id(response: httpx.Response) -> str:
    value = response.headers.get("x-amzn-requestid", "")
    assert len(value) == 36 and value.count("-") == 4, (response.status_code, dict(response.headers))
    return value


def _stopped_cleanly(server: Server) -> None:
    returncode = server.stop()
    assert returncode in (0, -15), server.stderr  # uvicorn may re-raise the SIGTERM it caught
    assert "Traceback" not in server.stderr, server.stderr


@pytest.fixture
def mount_server() -> Iterator[Server]:
    with serve("examples.fastapi_mount:app", cwd=ROOT, env=_env()) as server:
        yield server
    _stopped_cleanly(server)


def test_fastapi_mount_routes_http_and_the_invoke_api(mount_server: Server) -> None:
    with httpx.Client(base_url=mount_server.url, timeout=10) as client:
        own = client.get("/own")
        hello = client.get("/lambda/hello/a/b?x=1")
        missing = client.get("/lambda/nobody/")
    assert own.status_code == 200 and own.json() == {"route": "own"}
    assert hello.status_code == 200 and hello.text == "Hello from /a/b"  # the mount and name prefixes are stripped
    assert hello.headers["content-type"] == "text/plain"
    _request_id(hello)
    assert missing.status_code == 404

    lambda_client = boto3_lambda(mount_server.url + "/lambda")
    try:
        response = lambda_client.invoke(FunctionName="add", Payload=json.dumps({"a": 1, "b": 2}))
        payload = json.loads(response.pop("Payload").read())
        failed = lambda_client.invoke(FunctionName="add", Payload=b'{"a": 1}')
        error = json.loads(failed.pop("Payload").read())
        with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
            lambda_client.invoke(FunctionName="nobody", Payload=b"{}")
    finally:
        lambda_client.close()
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    # provisioned=1 and lifespan=functions.lifespan: the context was ready before the first call.
    assert payload == {"sum": 3, "cold_start": False}
    assert failed["FunctionError"] == "Unhandled" and error["errorType"] == "KeyError"


def test_fastapi_mount_runs_as_a_program() -> None:
    command = [sys.executable, str(EXAMPLES / "fastapi_mount.py"), PORT]
    with serve_command(command, cwd=ROOT, env=_env()) as server, httpx.Client(base_url=server.url) as client:
        own = client.get("/own")
        hello = client.get("/lambda/hello/")
    assert server.url.startswith(f"http://{HOST}:")
    assert own.json() == {"route": "own"}
    assert hello.text == "Hello from /"
    _stopped_cleanly(server)


def test_fastapi_wrap_context_resource_and_background_task() -> None:
    with (
        serve("examples.fastapi_wrap:app", cwd=ROOT, env=_env()) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        first, second = client.get("/").json(), client.get("/").json()
        order = client.post("/orders")
        audit_at_once = client.get("/audit").json()
        deadline = time.monotonic() + 10
        audit: list[str] = []
        while time.monotonic() < deadline:
            audit = client.get("/audit").json()
            if audit:
                break
            time.sleep(0.05)
    _stopped_cleanly(server)

    assert (first["cold_start"], second["cold_start"]) == (True, False)
    assert first["request_id"] != second["request_id"]
    assert 0 < first["ms_left"] <= 10_000
    assert first["client"] == second["client"]  # one warm httpx.AsyncClient, reused
    assert order.status_code == 200 and order.json()["accepted"] is True
    # The response went first; the background task (1 s) finished afterwards.
    assert audit_at_once == []
    assert audit == [f"order placed by {order.json()['request_id']}"]


def test_flask_wrap_under_gunicorn() -> None:
    command = [sys.executable, "-m", "gunicorn", "--bind", f"{HOST}:{PORT}", "--threads", "4"]
    with (
        serve_command([*command, "examples.flask_wrap:app"], cwd=ROOT, env=_env()) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        first, second = client.get("/").json(), client.get("/").json()
        started = time.monotonic()
        slow = client.get("/slow")
        slow_seconds = time.monotonic() - started
        after = client.get("/").json()
    assert server.stop() == 0, server.stderr
    assert "Traceback" not in server.stderr, server.stderr

    assert (first["cold_start"], first["visits"]) == (True, 1)
    assert (second["cold_start"], second["visits"]) == (False, 2)  # the same context, the same sqlite3 db
    assert slow.status_code == 504 and slow.json() == {"message": "Endpoint request timed out"}
    _request_id(slow)
    assert slow_seconds < 2.9  # answered at the 2 s deadline, not when the endpoint returned
    # A timed-out context is retired: the next request starts a fresh one, with a fresh scratch dir.
    assert (after["cold_start"], after["visits"]) == (True, 1)


def _invoke_isolated(event: dict[str, Any]) -> tuple[int, int, dict[str, Any], str]:
    """(the CLI's pid, its exit status, the JSON it printed, its stderr)."""
    command = [sys.executable, "-m", "lambdify", "invoke", str(EXAMPLES / "isolated.py"), "--event", "-"]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.communicate(json.dumps(event), timeout=60)
    return proc.pid, proc.returncode, json.loads(out), err


def test_isolated_runs_in_a_child_process() -> None:
    cli_pid, returncode, result, stderr = _invoke_isolated({})
    assert returncode == 0, stderr
    assert isinstance(result["pid"], int) and result["pid"] != cli_pid
    assert result == {
        "pid": result["pid"],
        "function_name": "isolated",
        "tz": "UTC",
        "tmp_is_scratch": True,
        "cold_start": True,
    }
    assert "Memory Size: 256 MB" in stderr


@pytest.mark.parametrize(
    ("event", "error_type"),
    [({"allocate_mb": 400}, "Runtime.OutOfMemory"), ({"sleep": 5}, "Sandbox.Timedout")],
    ids=["memory-limit", "timeout"],
)
def test_isolated_limits_are_hard(event: dict[str, Any], error_type: str) -> None:
    _, returncode, error, stderr = _invoke_isolated(event)
    assert returncode == 1, stderr
    assert error["errorType"] == error_type
