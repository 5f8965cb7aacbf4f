"""`lambdify` command-line mistakes give one clear line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import lambdify

CONSOLE_SCRIPT = Path(sys.executable).with_name("lambdify")

HELLO = """
from lambdify import handler

@handler
def hello(event, context):
    return "hi"
"""


def _lambdify(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CONSOLE_SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=30)


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    (tmp_path / "hello.py").write_text(HELLO)
    return tmp_path


@pytest.fixture
def port_in_use() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        pytest.param("99999", "argument --port: must be 0-65535, got 99999", id="too-high"),
        pytest.param("-1", "argument --port: must be 0-65535, got -1", id="negative"),
        pytest.param("http", "argument --port: not a port number: 'http'", id="not-a-number"),
    ],
)
def test_a_port_out_of_range_is_one_line_and_exit_2(hello: Path, port: str, expected: str) -> None:
    completed = _lambdify("serve", "hello.py", f"--port={port}", cwd=hello)
    assert completed.returncode == 2
    assert completed.stderr == f"lambdify: {expected}\n"
    assert completed.stdout == ""


@pytest.mark.parametrize("extra", [pytest.param([], id="one-process"), pytest.param(["--workers", "2"], id="workers")])
def test_a_port_in_use_is_one_line_and_exit_2(hello: Path, port_in_use: int, extra: list[str]) -> None:
    completed = _lambdify("serve", "hello.py", "--port", str(port_in_use), *extra, cwd=hello)
    assert completed.returncode == 2
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"lambdify: cannot listen on 127.0.0.1:{port_in_use}: address already in use")
    assert completed.stdout == ""  # no URLs printed for a server that never started


def test_a_host_that_does_not_resolve_is_one_line_and_exit_2(hello: Path) -> None:
    completed = _lambdify("serve", "hello.py", "--host", "no-such-host.invalid", cwd=hello)
    assert completed.returncode == 2
    assert len(completed.stderr.splitlines()) == 1, completed.stderr
    assert completed.stderr.startswith("lambdify: cannot listen on no-such-host.invalid:8080: ")


def test_version(tmp_path: Path) -> None:
    completed = _lambdify("--version", cwd=tmp_path)
    assert completed.returncode == 0
    assert completed.stdout == f"lambdify {lambdify.__version__}\n"


def test_serve_without_uvicorn_names_the_extra_to_install(hello: Path) -> None:
    # A Lambda deployment ships no web server: uvicorn is the `serve` extra's.
    code = "import sys; sys.modules['uvicorn'] = None; from lambdify.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "serve", "hello.py"], cwd=hello, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["lambdify: lambdify serve needs uvicorn: pip install 'lambdify[serve]'"]


def test_a_function_the_status_page_would_hide_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "hidden.py").write_text(HELLO.replace("@handler", "@handler(name='_lambdify')"))
    completed = _lambdify("serve", "hidden.py", "--port", "0", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.startswith("lambdify: a function named '_lambdify' would be hidden by the status page")
    assert len(completed.stderr.splitlines()) == 1
