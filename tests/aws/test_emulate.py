"""`lambdify emulate -- python -m awslambdaric fn.handler` (DESIGN.md §9), driven by boto3 against a
real emulator process: cold then warm, Tail logs, errors, timeouts, crashes, INIT errors,
concurrency across processes, frozen idle processes, Event invocations, HTTP events, SIGTERM."""

from __future__ import annotations

import base64
import json
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import PORT, Server, boto3_lambda, serve_command

pytest.importorskip("awslambdaric")

FUNCTION = """
import os, pathlib, time

print("INIT in", os.getpid())
if pathlib.Path("BROKEN").exists():
    raise ImportError("broken at import time")


def handler(event, context):
    print("handling", json_text(event), "remaining", context.get_remaining_time_in_millis())
    if "rawPath" in event:
        body = f"{event['requestContext']['http']['method']} {event['rawPath']} {os.getpid()}"
        return {"statusCode": 201, "headers": {"content-type": "text/plain"}, "body": body}
    time.sleep(event.get("sleep", 0))
    if event.get("fail"):
        raise ValueError("boom")
    if "exit" in event:
        os._exit(event["exit"])
    if "alloc_mb" in event:
        block = bytearray(event["alloc_mb"] << 20)
        block[:: 4096] = b"x" * len(block[:: 4096])
    if "mark" in event:
        pathlib.Path(event["mark"]).write_text(str(os.getpid()))
    remaining = context.get_remaining_time_in_millis()
    return {"pid": os.getpid(), "remaining": remaining, "env": os.environ["AWS_EXECUTION_ENV"]}


def json_text(event):
    import json
    return json.dumps(event, sort_keys=True)
"""


def _emulate(path: Path, *options: str) -> Any:
    path.joinpath("fn.py").write_text(FUNCTION)
    command = [sys.executable, "-m", "lambdify", "emulate", "--port", PORT, "--name", "fn", *options]
    return serve_command([*command, "--", sys.executable, "-m", "awslambdaric", "fn.handler"], cwd=path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with _emulate(
        tmp_path_factory.mktemp("emulate"), "--timeout", "2", "--max-contexts", "3", "--memory-mb", "128"
    ) as server:
        yield server


@pytest.fixture
def client(server: Server) -> Iterator[Any]:
    client = boto3_lambda(server.url)
    yield client
    client.close()


def _invoke(client: Any, event: Any, **options: Any) -> tuple[Any, dict[str, Any]]:
    response = client.invoke(FunctionName="fn", Payload=json.dumps(event), **options)
    return json.loads(response["Payload"].read() or b"null"), response


def _tail(response: dict[str, Any]) -> str:
    return base64.b64decode(response["LogResult"]).decode()


def _state(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    raise AssertionError(f"no State line for {pid}")


def _gone(pid: int) -> bool:
    try:
        return _state(pid) == "Z"
    except FileNotFoundError:
        return True


def test_cold_then_warm_on_one_process_with_tail_logs(client: Any) -> None:
    first, response = _invoke(client, {"n": 1}, LogType="Tail")
    second, again = _invoke(client, {"n": 2}, LogType="Tail")
    assert first["pid"] == second["pid"]
    assert 0 < first["remaining"] <= 2000  # (Lambda-Runtime-Deadline-Ms is sent)
    assert first["env"] == f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}"  # Lambda's value
    cold, warm = _tail(response), _tail(again)
    assert 'handling {"n": 1}' in cold and "Init Duration:" in cold
    assert 'handling {"n": 2}' in warm and "Init Duration:" not in warm and '"n": 1' not in warm
    for log in (cold, warm):
        assert log.startswith("START RequestId:") and "END RequestId:" in log
        assert "Memory Size: 128 MB\tMax Memory Used: " in log
    memory = float(warm.split("Max Memory Used: ")[1].split()[0])
    assert 5 < memory < 128


def test_handler_error(client: Any) -> None:
    payload, response = _invoke(client, {"fail": True})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "ValueError" and payload["errorMessage"] == "boom"
    assert any("raise ValueError" in line for line in payload["stackTrace"])
    assert _invoke(client, {})[0]["pid"]  # (the process lives on)


def test_timeout_kills_the_process_and_the_next_call_starts_another(client: Any) -> None:
    pid = _invoke(client, {})[0]["pid"]
    started = time.monotonic()
    payload, response = _invoke(client, {"sleep": 30})
    elapsed = time.monotonic() - started
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Sandbox.Timedout"
    assert payload["errorMessage"] == "Task timed out after 2.00 seconds"
    assert 1.9 < elapsed < 3.0
    after = _invoke(client, {})[0]["pid"]
    assert _gone(pid) and after != pid


def test_exit_status_is_a_runtime_exit_error(client: Any) -> None:
    payload, response = _invoke(client, {"exit": 3})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.ExitError"
    assert payload["errorMessage"] == "Runtime exited with error: exit status 3"
    assert _invoke(client, {})[0]["pid"]


def test_memory_over_memory_mb_is_out_of_memory(client: Any) -> None:
    pid = _invoke(client, {})[0]["pid"]
    payload, response = _invoke(client, {"alloc_mb": 160}, LogType="Tail")
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.OutOfMemory"
    assert "memory_mb=128" in payload["errorMessage"]
    assert "Max Memory Used: 1" in _tail(response)
    assert _invoke(client, {})[0]["pid"] != pid


def test_concurrent_invocations_run_on_separate_processes(client: Any) -> None:
    _invoke(client, {})  # (one warm process; the others start cold)
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: _invoke(client, {"sleep": 1.5})[0], range(3)))
    elapsed = time.monotonic() - started
    assert len({result["pid"] for result in results}) == 3
    assert elapsed < 2.9, elapsed  # (one after the other: 4.5 s)


def test_idle_processes_are_frozen_and_thawed(client: Any) -> None:
    pid = _invoke(client, {})[0]["pid"]
    deadline = time.monotonic() + 5
    while _state(pid) != "T" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(pid) == "T"
    assert _invoke(client, {})[0]["pid"] == pid


def test_event_invocations_are_queued(client: Any, tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    response = client.invoke(FunctionName="fn", InvocationType="Event", Payload=json.dumps({"mark": str(mark)}))
    assert response["StatusCode"] == 202
    deadline = time.monotonic() + 10
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark.read_text().isdigit()


def test_http_events(server: Server) -> None:
    response = httpx.post(server.url + "/fn/a/b?x=1", content=b"hi", timeout=10)
    assert response.status_code == 201
    method, path, _pid = response.text.split()
    assert (method, path) == ("POST", "/a/b")
    assert response.headers["content-type"] == "text/plain"


def test_unknown_function_and_dry_run(client: Any) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="other", Payload=b"{}")
    assert client.invoke(FunctionName="fn", InvocationType="DryRun")["StatusCode"] == 204


def test_init_error_then_recovery(tmp_path: Path) -> None:
    tmp_path.joinpath("BROKEN").write_text("")
    with _emulate(tmp_path) as server:
        client = boto3_lambda(server.url)
        try:
            payload, response = _invoke(client, {})
            assert response["FunctionError"] == "Unhandled"
            assert payload["errorType"] == "Runtime.ImportModuleError"
            assert "broken at import time" in payload["errorMessage"]
            tmp_path.joinpath("BROKEN").unlink()
            payload, response = _invoke(client, {}, LogType="Tail")
            assert "FunctionError" not in response and payload["pid"]
            assert "Init Duration:" in _tail(response)
        finally:
            client.close()


def test_sigterm_lets_running_invocations_finish_and_leaves_no_process(tmp_path: Path) -> None:
    with _emulate(tmp_path) as server:
        client = boto3_lambda(server.url)
        try:
            with ThreadPoolExecutor(2) as pool:
                pids = {result["pid"] for result in pool.map(lambda _: _invoke(client, {"sleep": 0.5})[0], range(2))}
                running = pool.submit(_invoke, client, {"sleep": 1})
                time.sleep(0.5)
                started = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                payload, response = running.result()
        finally:
            client.close()
        assert "FunctionError" not in response and payload["pid"] in pids
        assert len(pids) == 2
        assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # (uvicorn re-raises the signal it caught)
        assert time.monotonic() - started < 5
    assert all(_gone(pid) for pid in pids)
    assert "Traceback" not in server.stderr and "did not exit" not in server.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["emulate"], "needs a runtime command", id="no-command"),
        pytest.param(["emulate", "--"], "needs a runtime command", id="empty-command"),
        pytest.param(["emulate", "--timeout", "0", "--", "true"], "timeout must", id="bad-timeout"),
        pytest.param(["emulate", "--max-contexts", "0", "--", "true"], "max_contexts", id="bad-max-contexts"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from lambdify.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
