"""`WSGIMiddleware` inline on gunicorn's sync worker, and handed off on gthread (DESIGN.md §3).

Real gunicorn processes, one worker each, so that every request lands on the same worker.
"""

from __future__ import annotations

import sys
import textwrap
import time
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from servers import HOST, PORT, Server, serve_command

APP = """
import os
import signal
import sqlite3
import threading
import time

from flask import Flask

from lambdify import WSGIMiddleware, current_context

if os.environ.get("OWN_SIGALRM"):
    def on_alarm(signum, frame):
        pass
    signal.signal(signal.SIGALRM, on_alarm)  # the app's own: lambdify must leave it alone


def setup(ctx):
    # check_same_thread=True (the default): sqlite3 refuses the connection on any other thread.
    ctx.resources.add("db", lambda: sqlite3.connect(":memory:"), check=lambda db: db.execute("select 1"))


app = Flask(__name__)


@app.get("/db")
def db():
    context = current_context()
    context.resources["db"].execute("select 1").fetchone()
    return {
        "pid": os.getpid(),
        "cold": context.cold_start,
        "main": threading.current_thread() is threading.main_thread(),
        "alarm": getattr(signal.getsignal(signal.SIGALRM), "__name__", "default"),
    }


@app.get("/sleep")
def sleep():
    time.sleep(8)
    return "woke up"


@app.get("/busy")
def busy():
    n = 0
    while True:  # pure Python, never blocking
        try:
            n += 1
        except Exception:  # code that swallows errors does not swallow the deadline
            pass


@app.get("/slow-body")
def slow_body():
    def chunks():
        yield b"first "
        time.sleep(8)
        yield b"never"
    return app.response_class(chunks())


app.wsgi_app = WSGIMiddleware(app.wsgi_app, timeout=1, init=setup)
"""

WORKERS = [
    pytest.param(["-k", "sync"], True, id="sync-inline"),
    pytest.param(["-k", "gthread", "--threads", "4"], False, id="gthread-hand-off"),
]


def _gunicorn(folder: Path, worker: list[str], env: dict[str, str] | None = None) -> AbstractContextManager[Server]:
    (folder / "inline_app.py").write_text(textwrap.dedent(APP))
    command = [sys.executable, "-m", "gunicorn", "-w", "1", *worker, "-b", f"{HOST}:{PORT}", "inline_app:app"]
    return serve_command(command, cwd=folder, env=env)


def _timed(client: httpx.Client, url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get(url)
    return response, time.monotonic() - started


@pytest.mark.parametrize(("worker", "inline"), WORKERS)
def test_stuck_requests_get_504_at_the_deadline_and_the_worker_serves_on(
    tmp_path: Path, worker: list[str], inline: bool
) -> None:
    with _gunicorn(tmp_path, worker) as server, httpx.Client(timeout=15) as client:
        first = client.get(f"{server.url}/db").json()
        second = client.get(f"{server.url}/db").json()
        for path in ("/sleep", "/busy"):
            response, elapsed = _timed(client, server.url + path)
            assert response.status_code == 504, (path, response.text)
            assert response.json() == {"message": "Endpoint request timed out"}
            assert 0.9 <= elapsed < 1.8, (path, elapsed)
            after = client.get(f"{server.url}/db").json()
            assert after["pid"] == first["pid"]  # the same worker serves on
            assert after["cold"] is True  # on a fresh context: the timed-out one was retired
        again = client.get(f"{server.url}/db").json()
    assert first["main"] is inline and second["main"] is inline
    assert first["cold"] is True and second["cold"] is False  # warm reuse of the sqlite3 connection
    assert again["cold"] is False
    assert first["alarm"] == ("_on_alarm" if inline else "default")
    assert "Traceback" not in server.stderr, server.stderr


@pytest.mark.parametrize(("worker", "inline"), WORKERS)
def test_a_body_past_the_deadline_closes_the_connection(tmp_path: Path, worker: list[str], inline: bool) -> None:
    with _gunicorn(tmp_path, worker) as server, httpx.Client(timeout=15) as client:
        started = time.monotonic()
        try:
            response = client.get(f"{server.url}/slow-body")
            outcome = (response.status_code, response.content)
        except httpx.HTTPError as exc:
            outcome = (0, type(exc).__name__.encode())
        elapsed = time.monotonic() - started
        assert client.get(f"{server.url}/db").status_code == 200
    if inline:
        # Streamed: the status line went out with the first chunk; at the deadline the
        # connection is closed, so that no half-sent body passes for a complete one.
        assert outcome[0] in (0, 200) and b"never" not in outcome[1], outcome
    else:
        # Handed off: the body is collected within the deadline, so nothing was sent yet.
        assert outcome[0] == 504, outcome
    assert elapsed < 2.0, elapsed


def test_an_apps_own_sigalrm_handler_is_kept_and_it_still_gets_its_504(tmp_path: Path) -> None:
    with _gunicorn(tmp_path, ["-k", "sync"], env={"OWN_SIGALRM": "1"}) as server, httpx.Client(timeout=15) as client:
        before = client.get(f"{server.url}/db").json()
        response, elapsed = _timed(client, f"{server.url}/sleep")
        after = client.get(f"{server.url}/db").json()
    assert before["alarm"] == after["alarm"] == "on_alarm"  # never replaced
    assert before["main"] is False  # so the app ran on its context's thread (the hand-off)
    assert response.status_code == 504 and 0.9 <= elapsed < 1.8, (response.status_code, elapsed)
    assert after["pid"] == before["pid"]


OBJECT_APP = """
from flask import Flask
from lambdify import WSGIMiddleware, current_context

flask_app = Flask(__name__)
flask_app.config["GREETING"] = "hi"


@flask_app.get("/")
def index():
    return {"greeting": flask_app.config["GREETING"], "function": current_context().function_name}


app = WSGIMiddleware(flask_app, timeout=2)  # the Flask object itself, the most common way to wrap
"""


@pytest.mark.parametrize("worker", [w.values[0] for w in WORKERS], ids=["sync", "gthread"])
def test_the_flask_object_itself_wrapped_under_gunicorn(tmp_path: Path, worker: list[str]) -> None:
    (tmp_path / "object_app.py").write_text(textwrap.dedent(OBJECT_APP))
    command = [sys.executable, "-m", "gunicorn", "-w", "1", *worker, "-b", f"{HOST}:{PORT}", "object_app:app"]
    with serve_command(command, cwd=tmp_path) as server, httpx.Client(timeout=10) as client:
        responses = [client.get(f"{server.url}/") for _ in range(3)]
    assert [response.status_code for response in responses] == [200] * 3, responses[0].text
    assert responses[0].json() == {"greeting": "hi", "function": "app"}
