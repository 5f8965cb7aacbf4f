"""`lambdify invoke TARGET [--event FILE|-]`, run as a real subprocess (DESIGN.md §7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CONSOLE_SCRIPT = Path(sys.executable).with_name("lambdify")

ECHO = """
from lambdify import handler

@handler
def echo(event, context):
    print("printed by the handler")
    return {"event": event, "module": __name__}
"""

TWO_FUNCTIONS = """
from lambdify import handler

@handler
def alpha(event, context):
    return "a"

@handler
def beta(event, context):
    return "b"
"""

RAISES = """
from lambdify import handler

def helper():
    raise ValueError("something broke")

@handler
def broken(event, context):
    helper()
"""

NOT_A_FUNCTION = """
from lambdify import handler

def plain(event, context):
    return 1

@handler
def real(event, context):
    return 2
"""


def _write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def _run(
    *args: str,
    cwd: Path,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    script: bool = False,
) -> subprocess.CompletedProcess[str]:
    command = [str(CONSOLE_SCRIPT)] if script else [sys.executable, "-m", "lambdify"]
    environ = dict(os.environ)
    environ.pop("PYTHONPATH", None)  # only what a test sets
    environ.update(env or {})
    return subprocess.run(
        [*command, "invoke", *args],
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def _usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of an exit-2 usage error (and nothing on stdout)."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- a successful invocation -------------------------------------------------------------------


@pytest.mark.parametrize("script", [pytest.param(False, id="python-m"), pytest.param(True, id="console-script")])
def test_result_on_stdout_logs_and_prints_on_stderr(tmp_path: Path, script: bool) -> None:
    _write(tmp_path, "echo_fn.py", ECHO)
    (tmp_path / "event.json").write_text('{"name": "Ada"}')

    result = _run("echo_fn.py:echo", "--event", "event.json", cwd=tmp_path, script=script)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"event": {"name": "Ada"}, "module": "echo_fn"}
    assert "printed by the handler" not in result.stdout
    assert "printed by the handler" in result.stderr
    stderr_lines = result.stderr.splitlines()
    assert any(line.startswith("START RequestId: ") and "Version: $LATEST" in line for line in stderr_lines)
    assert any(line.startswith("END RequestId: ") for line in stderr_lines)
    report = [line for line in stderr_lines if line.startswith("REPORT RequestId: ")]
    assert len(report) == 1
    assert "\tDuration: " in report[0]
    assert "\tInit Duration: " in report[0]
    assert "START" not in result.stdout


@pytest.mark.parametrize(
    ("event_args", "stdin", "expected"),
    [
        pytest.param(["--event", "event.json"], None, {"from": "file"}, id="event-file"),
        pytest.param(["--event", "-"], '{"from": "stdin"}', {"from": "stdin"}, id="event-stdin"),
        pytest.param([], None, {}, id="no-event"),
    ],
)
def test_event_sources(tmp_path: Path, event_args: list[str], stdin: str | None, expected: object) -> None:
    _write(tmp_path, "echo_fn.py", ECHO)
    (tmp_path / "event.json").write_text('{"from": "file"}')

    result = _run("echo_fn.py:echo", *event_args, cwd=tmp_path, stdin=stdin)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["event"] == expected


@pytest.mark.parametrize(
    ("target", "cwd_is_folder", "pythonpath"),
    [
        pytest.param("echo_mod:echo", True, False, id="module-attr-from-cwd"),
        pytest.param("echo_mod:echo", False, True, id="module-attr-from-pythonpath"),
        pytest.param("{folder}/echo_mod.py:echo", False, False, id="file-attr"),
        pytest.param("{folder}/echo_mod.py", False, False, id="file-with-one-function"),
    ],
)
@pytest.mark.parametrize("script", [pytest.param(False, id="python-m"), pytest.param(True, id="console-script")])
def test_target_forms(tmp_path: Path, target: str, cwd_is_folder: bool, pythonpath: bool, script: bool) -> None:
    folder = tmp_path / "code"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _write(folder, "echo_mod.py", ECHO)
    env = {"PYTHONPATH": str(folder)} if pythonpath else None

    result = _run(
        target.format(folder=folder),
        "--event",
        "-",
        stdin='{"x": 1}',
        cwd=folder if cwd_is_folder else elsewhere,
        env=env,
        script=script,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"event": {"x": 1}, "module": "echo_mod"}


def test_file_is_imported_under_its_own_name_never_main(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "whoami.py",
        """
        import sys
        from lambdify import handler

        @handler
        def whoami(event, context):
            return {"name": __name__, "main_is_me": sys.modules.get("__main__") is sys.modules.get(__name__)}
        """,
    )

    for target in ("whoami.py", "whoami.py:whoami", str(tmp_path / "whoami.py")):
        result = _run(target, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"name": "whoami", "main_is_me": False}


# -- usage errors: exit 2, one line on stderr --------------------------------------------------


def test_file_with_two_functions_and_no_attribute_names_them(tmp_path: Path) -> None:
    _write(tmp_path, "two.py", TWO_FUNCTIONS)

    line = _usage_error(_run("two.py", cwd=tmp_path))

    assert "alpha" in line
    assert "beta" in line


def test_file_with_two_functions_and_an_attribute_invokes_that_one(tmp_path: Path) -> None:
    _write(tmp_path, "two.py", TWO_FUNCTIONS)

    result = _run("two.py:beta", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "b"


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("missing_file.py", id="bare-file"),
        pytest.param("missing_file.py:fn", id="file-attr"),
    ],
)
def test_missing_file(tmp_path: Path, target: str) -> None:
    line = _usage_error(_run(target, cwd=tmp_path))

    assert "missing_file.py" in line


def test_missing_module(tmp_path: Path) -> None:
    line = _usage_error(_run("no_such_module_here:fn", cwd=tmp_path))

    assert "no_such_module_here" in line


@pytest.mark.parametrize(
    "target",
    [pytest.param("two.py:gamma", id="file-attr"), pytest.param("two:gamma", id="module-attr")],
)
def test_missing_attribute(tmp_path: Path, target: str) -> None:
    _write(tmp_path, "two.py", TWO_FUNCTIONS)

    line = _usage_error(_run(target, cwd=tmp_path))

    assert "gamma" in line


def test_attribute_that_is_not_a_function(tmp_path: Path) -> None:
    _write(tmp_path, "mixed.py", NOT_A_FUNCTION)

    line = _usage_error(_run("mixed.py:plain", cwd=tmp_path))

    assert "plain" in line


@pytest.mark.parametrize(
    ("event_args", "stdin"),
    [
        pytest.param(["--event", "bad.json"], None, id="event-file"),
        pytest.param(["--event", "-"], "{not json", id="event-stdin"),
    ],
)
def test_invalid_json_event(tmp_path: Path, event_args: list[str], stdin: str | None) -> None:
    _write(tmp_path, "echo_fn.py", ECHO)
    (tmp_path / "bad.json").write_text("{not json")

    _usage_error(_run("echo_fn.py:echo", *event_args, cwd=tmp_path, stdin=stdin))


def test_missing_event_file(tmp_path: Path) -> None:
    _write(tmp_path, "echo_fn.py", ECHO)

    line = _usage_error(_run("echo_fn.py:echo", "--event", "nope.json", cwd=tmp_path))

    assert "nope.json" in line


# -- function errors: exit 1, Lambda's error JSON on stdout ------------------------------------


def test_raising_handler_exits_1_with_the_lambda_error_payload(tmp_path: Path) -> None:
    _write(tmp_path, "broken_fn.py", RAISES)

    result = _run("broken_fn.py:broken", cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert payload["errorType"] == "ValueError"
    assert payload["errorMessage"] == "something broke"
    assert isinstance(payload["stackTrace"], list)
    assert any("helper" in frame for frame in payload["stackTrace"])
    assert f"START RequestId: {payload['requestId']}" in result.stderr
