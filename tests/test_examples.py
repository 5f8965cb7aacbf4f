"""Every example in examples/ runs, both through `lambdify invoke` and as a program."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _env() -> dict[str, str]:
    # The examples import lambdify from this checkout even when it is not installed.
    env = {key: value for key, value in os.environ.items() if not key.startswith("LAMBDIFY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def invoke(example: str, event: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lambdify", "invoke", str(EXAMPLES / example), "--event", "-"],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_env(),
    )


def run_program(example: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / example)], capture_output=True, text=True, timeout=60, cwd=ROOT, env=_env()
    )


def test_hello() -> None:
    done = invoke("hello.py", {"name": "Ada"})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["message"] == "Hello, Ada!"
    assert result["cold_start"] is True
    assert len(result["request_id"]) == 36
    assert "START RequestId: " + result["request_id"] in done.stderr
    assert "REPORT RequestId: " + result["request_id"] in done.stderr


def test_hello_event_file() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lambdify",
            "invoke",
            str(EXAMPLES / "hello.py"),
            "--event",
            str(EXAMPLES / "hello-event.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["message"] == "Hello, Ada!"


def test_hello_default_name() -> None:
    done = invoke("hello.py", {})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["message"] == "Hello, world!"


def test_hello_program_warm_start() -> None:
    done = run_program("hello.py")
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert (first["cold_start"], second["cold_start"]) == (True, False)
    assert first["request_id"] != second["request_id"]


def test_resources() -> None:
    done = invoke("resources.py", {})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == 1


def test_resources_program_counts_on_a_warm_context() -> None:
    done = run_program("resources.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "2", "3"]


def test_deferred() -> None:
    done = invoke("deferred.py", {"order": 42})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["accepted"] is True
    assert result["audit_log"].endswith("audit.log")
    # The context was shut down when the command ended: its scratch directory is gone.
    assert not Path(result["audit_log"]).exists()


def test_deferred_program_flushes_before_invoke_returns() -> None:
    done = run_program("deferred.py")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.endswith("order=42")


@pytest.mark.parametrize("example", ["hello.py", "resources.py", "deferred.py"])
def test_invalid_event_is_a_usage_error(example: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lambdify", "invoke", str(EXAMPLES / example), "--event", "-"],
        input="{not json",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_env(),
    )
    assert done.returncode == 2
    assert done.stdout == ""
