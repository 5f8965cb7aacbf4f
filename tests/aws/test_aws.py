"""`fn(event, context)`: the AWS Lambda entry point (DESIGN.md §2), on AWS and off it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from lambdify import InvocationTimeout, LambdaContext, handler


class FakeAWSContext:
    """What the AWS Python runtime passes as `context`."""

    def __init__(self, request_id: str, remaining_ms: int = 3000) -> None:
        self.aws_request_id = request_id
        self.function_name = "my-function"
        self.invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:my-function"
        self.memory_limit_in_mb = 256
        self.log_group_name = "/aws/lambda/my-function"
        self.log_stream_name = "2024/01/01/[$LATEST]0123456789abcdef"
        self._deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


SYNC_TARGET = """
from lambdify import handler

INITS = []
DEFERRED = []


def setup(ctx):
    INITS.append(ctx.id)


@handler(init=setup)
def fn(event, context):
    context.defer(DEFERRED.append, context.aws_request_id)
    return {
        "event": event,
        "cold_start": context.cold_start,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "ctx": context.execution.id,
    }
"""

ASYNC_TARGET = """
import asyncio

from lambdify import handler

INITS = []
DEFERRED = []


async def setup(ctx):
    await asyncio.sleep(0)
    INITS.append(ctx.id)


async def record(request_id):
    await asyncio.sleep(0.01)
    DEFERRED.append(request_id)


@handler(init=setup)
async def fn(event, context):
    await asyncio.sleep(0)
    context.defer(record(context.aws_request_id))
    return {
        "event": event,
        "cold_start": context.cold_start,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "ctx": context.execution.id,
    }
"""

RUNNER = """
import json
import sys
import time

sys.path.insert(0, {folder!r})

import {module} as target


class FakeAWSContext:
    def __init__(self, request_id):
        self.aws_request_id = request_id
        self.function_name = "my-function"
        self.invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:my-function"
        self.memory_limit_in_mb = 256
        self.log_group_name = "/aws/lambda/my-function"
        self.log_stream_name = "2024/01/01/[$LATEST]0123456789abcdef"
        self._deadline = time.monotonic() + 3.0

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))


calls = []
for n, request_id in enumerate(["req-1", "req-2"]):
    result = target.fn({{"n": n}}, FakeAWSContext(request_id))
    calls.append({{"result": result, "deferred": list(target.DEFERRED)}})
report = {{
    "calls": calls,
    "inits": len(target.INITS),
    "modules": sorted(m for m in ("starlette", "uvicorn", "asyncio") if m in sys.modules),
}}
print(json.dumps(report))
"""


def _run_on_fake_aws(tmp_path: Path, source: str) -> dict[str, Any]:
    (tmp_path / "aws_target.py").write_text(textwrap.dedent(source))
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER.format(folder=str(tmp_path), module="aws_target"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("LAMBDIFY_")}
    env["AWS_LAMBDA_RUNTIME_API"] = "127.0.0.1:9001"
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, str(runner)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        pytest.param(SYNC_TARGET, ["asyncio", "starlette", "uvicorn"], id="sync-handler"),
        pytest.param(ASYNC_TARGET, ["starlette", "uvicorn"], id="async-handler"),
    ],
)
def test_on_aws_the_process_is_the_execution_context(tmp_path: Path, source: str, forbidden: list[str]) -> None:
    report = _run_on_fake_aws(tmp_path, source)

    first, second = (call["result"] for call in report["calls"])
    assert report["inits"] == 1
    assert first["cold_start"] is True
    assert second["cold_start"] is False
    assert first["ctx"] == second["ctx"]
    assert [first["request_id"], second["request_id"]] == ["req-1", "req-2"]
    assert [first["event"], second["event"]] == [{"n": 0}, {"n": 1}]
    assert first["function_name"] == "my-function"
    assert first["arn"] == "arn:aws:lambda:eu-west-1:123456789012:function:my-function"
    assert first["memory"] == 256
    # The deferred item ran before each call returned.
    assert [call["deferred"] for call in report["calls"]] == [["req-1"], ["req-1", "req-2"]]
    assert not set(forbidden) & set(report["modules"])


# -- off AWS: like invoke() with the given request id and deadline -----------------------------


def test_off_aws_call_behaves_like_invoke_with_the_given_request_id() -> None:
    deferred: list[str] = []

    @handler
    def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        context.defer(deferred.append, context.aws_request_id)
        return {"event": event, "request_id": context.aws_request_id, "cold_start": context.cold_start}

    try:
        first = fn({"a": 1}, FakeAWSContext("req-off-1"))
        second = fn({"a": 2}, FakeAWSContext("req-off-2"))
        stats = fn.stats()
    finally:
        fn.shutdown()

    assert first == {"event": {"a": 1}, "request_id": "req-off-1", "cold_start": True}
    assert second == {"event": {"a": 2}, "request_id": "req-off-2", "cold_start": False}
    assert deferred == ["req-off-1", "req-off-2"]
    assert stats["invocations"] == 2


def test_off_aws_call_of_an_async_handler() -> None:
    @handler
    async def fn(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"request_id": context.aws_request_id, "cold_start": context.cold_start}

    try:
        first = fn({}, FakeAWSContext("req-async-1"))
        second = fn({}, FakeAWSContext("req-async-2"))
    finally:
        fn.shutdown()

    assert first == {"request_id": "req-async-1", "cold_start": True}
    assert second == {"request_id": "req-async-2", "cold_start": False}


def test_off_aws_deadline_comes_from_the_given_context() -> None:
    @handler(timeout=30)
    def fn(event: dict[str, Any], context: LambdaContext) -> str:
        for _ in range(200):  # 2 s in short sleeps, so the abandoned thread unwinds soon
            time.sleep(0.01)
        return "finished"

    try:
        started = time.monotonic()
        with pytest.raises(InvocationTimeout) as caught:
            fn({}, FakeAWSContext("req-timeout", remaining_ms=200))
        elapsed = time.monotonic() - started
    finally:
        fn.shutdown()

    assert caught.value.request_id == "req-timeout"
    assert caught.value.error_type == "Sandbox.Timedout"
    assert elapsed < 10
