"""Lambda's JSON logs (DESIGN.md §10): `AWS_LAMBDA_LOG_FORMAT=JSON` or `--log-format json`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lambdify.core.json_logs import JsonFormatter, platform_record

SOURCE = """
import logging
import time

from lambdify import handler

log = logging.getLogger("app")


@handler(timeout=1)
def hello(event, context):
    time.sleep(event.get("sleep", 0))
    log.info("hello %s", event.get("who"))
    log.debug("not at INFO")
    if event.get("fail"):
        raise ValueError("bad input")
    return {"ok": True}
"""


def _invoke(tmp_path: Path, *args: str, env: dict[str, str] | None = None, event: Any = None) -> tuple[int, list[Any]]:
    (tmp_path / "fn.py").write_text(textwrap.dedent(SOURCE))
    environ = {key: value for key, value in os.environ.items() if not key.startswith("AWS_LAMBDA_LOG")}
    environ.pop("PYTHONPATH", None)
    environ.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "lambdify", "invoke", "fn.py:hello", "--event", "-", *args],
        cwd=tmp_path,
        input=json.dumps(event or {"who": "you"}),
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )
    lines = result.stderr.splitlines()
    assert lines, result
    return result.returncode, [json.loads(line) for line in lines]  # every line is one JSON object


def _of_type(records: list[Any], kind: str) -> list[Any]:
    return [record for record in records if record.get("type") == kind]


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param((), {"AWS_LAMBDA_LOG_FORMAT": "JSON"}, id="environment"),
        pytest.param(("--log-format", "json"), {}, id="option"),
    ],
)
def test_invoke_writes_platform_and_application_records(tmp_path: Path, args: tuple[str, ...], env: Any) -> None:
    status, records = _invoke(tmp_path, *args, env=env)
    assert status == 0
    [start] = _of_type(records, "platform.start")
    [report] = _of_type(records, "platform.report")
    request_id = start["record"]["requestId"]
    assert report["record"]["requestId"] == request_id
    assert report["record"]["status"] == "success"
    [done] = _of_type(records, "platform.runtimeDone")
    assert done["record"] == {"requestId": request_id, "status": "success"}
    metrics = report["record"]["metrics"]
    assert set(metrics) == {"durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB", "initDurationMs"}
    assert metrics["billedDurationMs"] >= 1 and metrics["memorySizeMB"] == 128 and metrics["maxMemoryUsedMB"] >= 1
    assert metrics["initDurationMs"] > 0  # the cold start
    assert report["time"].endswith("Z")
    [app] = [record for record in records if record.get("logger") == "app"]
    assert app["message"] == "hello you"
    assert app["level"] == "INFO"
    assert app["requestId"] == request_id
    assert app["timestamp"].endswith("Z")


def test_log_level_filters_application_records_not_platform_ones(tmp_path: Path) -> None:
    env = {"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "DEBUG"}
    _, records = _invoke(tmp_path, env=env)
    assert [record["message"] for record in records if record.get("logger") == "app"] == ["hello you", "not at INFO"]
    _, records = _invoke(tmp_path, env={**env, "AWS_LAMBDA_LOG_LEVEL": "WARN"})
    assert not [record for record in records if record.get("logger") == "app"]
    assert _of_type(records, "platform.report")


def test_an_error_is_one_record_with_the_request_id(tmp_path: Path) -> None:
    status, records = _invoke(tmp_path, env={"AWS_LAMBDA_LOG_FORMAT": "json"}, event={"fail": True})
    assert status == 1
    [report] = _of_type(records, "platform.report")
    [error] = [record for record in records if record.get("level") == "ERROR"]
    assert "ValueError: bad input" in error["message"]
    assert error["requestId"] == report["record"]["requestId"]


def test_a_timeout_is_the_status_of_runtime_done_and_report(tmp_path: Path) -> None:
    status, records = _invoke(tmp_path, env={"AWS_LAMBDA_LOG_FORMAT": "JSON"}, event={"sleep": 3})
    assert status == 1
    [done] = _of_type(records, "platform.runtimeDone")
    [report] = _of_type(records, "platform.report")
    assert done["record"]["status"] == report["record"]["status"] == "timeout"


def test_text_stays_the_default(tmp_path: Path) -> None:
    (tmp_path / "fn.py").write_text(textwrap.dedent(SOURCE))
    environ = {key: value for key, value in os.environ.items() if not key.startswith("AWS_LAMBDA_LOG")}
    result = subprocess.run(
        [sys.executable, "-m", "lambdify", "invoke", "fn.py:hello"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )
    assert "REPORT RequestId: " in result.stderr
    assert "platform.report" not in result.stderr


def test_report_line_with_status_and_no_init() -> None:
    line = "REPORT RequestId: abc\tDuration: 3000.12 ms\tBilled Duration: 3001 ms\tMemory Size: 256 MB\t"
    line += "Max Memory Used: 40 MB\tStatus: timeout"
    assert platform_record(line) == (
        "platform.report",
        {
            "requestId": "abc",
            "status": "timeout",
            "metrics": {"durationMs": 3000.12, "billedDurationMs": 3001, "memorySizeMB": 256, "maxMemoryUsedMB": 40},
        },
    )


def test_formatter_keeps_extra_fields_and_exceptions() -> None:
    try:
        raise KeyError("k")
    except KeyError:
        record = logging.getLogger("x").makeRecord("x", logging.WARNING, "f.py", 1, "m %d", (1,), sys.exc_info())
    record.order = 7
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "m 1" and out["level"] == "WARNING" and out["order"] == 7
    assert out["errorType"] == "KeyError" and out["stackTrace"]
    assert "requestId" not in out  # outside an invocation


def test_context_log_is_one_line_of_its_own(tmp_path: Path) -> None:
    # Each call is one log event on Lambda: the text never runs into the END line (nor, in JSON
    # mode, into the runtimeDone record, which must stay a line of JSON of its own).
    (tmp_path / "fn.py").write_text(
        "from lambdify import handler\n\n@handler\ndef hello(event, context):\n    context.log('from context.log')\n"
    )
    for args in ((), ("--log-format", "json")):
        result = subprocess.run(
            [sys.executable, "-m", "lambdify", "invoke", "fn.py:hello", "--event", "-", *args],
            cwd=tmp_path, input="{}", capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        lines = result.stderr.splitlines()
        assert "from context.log" in lines, result.stderr
        assert sum(line.startswith(("END RequestId", '{"time"')) for line in lines) >= 1
