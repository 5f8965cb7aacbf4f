"""A script that invokes a process-isolated function at module level, without a `__main__` guard.

Each execution context's child imports the script again; the invocation there would start
another child, and so on. The first child refuses at once, and the caller gets an InitError
that names the guard, instead of "Init timed out" ten seconds later.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

HANDLER = """
from lambdify import handler


@handler(isolation="process")
def outer(event, context):
    return "hi"

"""

GUARD = 'if __name__ == "__main__":'


def _run(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess[str], float]:
    script = tmp_path / "script.py"
    script.write_text(HANDLER + textwrap.dedent(body))
    started = time.monotonic()
    completed = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    return completed, time.monotonic() - started


def test_an_invocation_at_module_level_fails_at_once_naming_the_guard(tmp_path: Path) -> None:
    completed, elapsed = _run(tmp_path, "print(outer.invoke({}))\n")
    assert completed.returncode == 1
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("lambdify.core.errors.InitError: Runtime.InitError: outer was invoked while")
    assert GUARD in last
    assert "timed out" not in completed.stderr
    assert elapsed < 5, f"failed after {elapsed:.1f} s (the INIT timeout is 10 s)"


def test_the_refusal_is_reported_even_if_the_module_catches_it(tmp_path: Path) -> None:
    body = """
    try:
        outer.invoke({})
    except Exception as exc:
        print("caught:", exc)
    """
    completed, elapsed = _run(tmp_path, body)
    assert completed.returncode == 0  # the script's own handler caught the InitError
    # (The child, which caught the refusal too, prints its own line, in either order.)
    caught = [line for line in completed.stdout.splitlines() if line.startswith("caught: Runtime.InitError: outer")]
    assert caught, completed.stdout
    assert GUARD in caught[0]
    assert elapsed < 5


@pytest.mark.parametrize("body", [pytest.param(GUARD + "\n    print(outer.invoke({}))\n", id="guarded")])
def test_a_guarded_script_is_not_affected(tmp_path: Path, body: str) -> None:
    completed, _ = _run(tmp_path, body)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "hi\n"
