"""`WSGIMiddleware` around a Flask app (DESIGN.md §1 Fork, §3, §5), under real gunicorn processes.

Two sync workers, with and without `--preload`. With `--preload` the master also serves one
request through the middleware before forking (`WARM_IN_MASTER`), so that the workers inherit
a live context and resource that they must silently discard.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import HOST, PORT, Server, serve_command

APP = """
import json
import os
import sqlite3
import time

from flask import Flask, request

from lambdify import WSGIMiddleware, current_context


class Conn:
    # A connection made in INIT: thread-bound (sqlite3), and stamped with the process that made it.
    def __init__(self):
        self.pid = os.getpid()
        self.db = sqlite3.connect(":memory:")

    def close(self):
        self.db.close()


def setup(ctx):
    ctx.resources.add("conn", Conn)


app = Flask(__name__)


@app.get("/who")
def who():
    lc = request.environ["lambdify.context"]
    conn = lc.resources["conn"]
    conn.db.execute("SELECT 1").fetchone()  # sqlite3 refuses a connection used from another thread
    time.sleep(float(request.args.get("sleep", "0")))
    return {
        "pid": os.getpid(),
        "conn_pid": conn.pid,
        "conn_id": id(conn),
        "cold_start": lc.cold_start,
        "execution": lc.execution.id,
        "current": current_context() is lc,
    }


@app.get("/slow")
def slow():
    with open("slow.pid", "w") as out:
        out.write(str(os.getpid()))
    time.sleep(3)
    return {"done": True}


app.wsgi_app = WSGIMiddleware(app.wsgi_app, timeout=1, init=setup)

if os.environ.get("WARM_IN_MASTER"):
    # Under --preload this runs in the master: a context and a resource exist before the fork.
    with app.test_client() as client:
        response = client.get("/who")
        master = response.get_json()
        response.close()  # as a WSGI server would: the invocation completes in the body's close()
    with open("master.json", "w") as out:
        json.dump(master, out)
"""

MODES = [pytest.param(False, id="plain"), pytest.param(True, id="preload")]


def _gunicorn(folder: Path, preload: bool) -> AbstractContextManager[Server]:
    (folder / "flask_app.py").write_text(textwrap.dedent(APP))
    command = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"{HOST}:{PORT}", "flask_app:app"]
    env = {}
    if preload:
        command.insert(-1, "--preload")
        env["WARM_IN_MASTER"] = "1"
    return serve_command(command, cwd=folder, env=env)


def _get(url: str, sleep: float = 0.0) -> tuple[dict[str, Any], float]:
    # A new client, hence a new connection, per request.
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        response = client.get(f"{url}/who", params={"sleep": sleep})
    response.raise_for_status()
    return response.json(), time.monotonic() - started


def _both_workers(server: Server, rounds: int = 10) -> list[dict[str, Any]]:
    """Pairs of overlapping requests until both workers have answered (at most `rounds` pairs)."""
    bodies: list[dict[str, Any]] = []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(rounds):
            bodies += [body for body, _ in pool.map(lambda _: _get(server.url, 0.2), range(2))]
            if len({body["pid"] for body in bodies}) == 2:
                break
    return bodies


def _stopped_gracefully(server: Server) -> None:
    assert server.returncode == 0, server.stderr[-3000:]
    assert "Traceback" not in server.stderr, server.stderr[-3000:]


@pytest.mark.parametrize("preload", MODES)
def test_each_worker_has_its_own_context_and_connection(tmp_path: Path, preload: bool) -> None:
    with _gunicorn(tmp_path, preload) as server:
        bodies = _both_workers(server)
        bodies += [_get(server.url)[0] for _ in range(6)]
    by_pid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for body in bodies:
        by_pid[body["pid"]].append(body)
    assert len(by_pid) == 2, sorted(by_pid)
    assert server.proc.pid not in by_pid  # served by the workers, not the master
    for pid, seen in by_pid.items():
        assert [body["conn_pid"] for body in seen] == [pid] * len(seen)  # never a connection from another process
        assert sum(body["cold_start"] for body in seen) == 1, seen  # one cold start per worker
        assert seen[0]["cold_start"] is True
        assert len({body["execution"] for body in seen}) == 1  # one warm context per worker...
        assert len({body["conn_id"] for body in seen}) == 1  # ... whose connection is reused
        assert all(body["current"] for body in seen)
    assert len({seen[0]["execution"] for seen in by_pid.values()}) == 2
    if preload:
        master = json.loads((tmp_path / "master.json").read_text())
        assert master["pid"] == server.proc.pid and master["cold_start"] is True
        assert master["execution"] not in {body["execution"] for body in bodies}  # inherited, then discarded
        assert master["pid"] not in {body["conn_pid"] for body in bodies}
    _stopped_gracefully(server)


@pytest.mark.parametrize("preload", MODES)
def test_slow_request_gets_504_and_its_worker_answers_the_next_promptly(tmp_path: Path, preload: bool) -> None:
    with _gunicorn(tmp_path, preload) as server, httpx.Client(timeout=10) as client:
        _both_workers(server)  # both workers warm
        started = time.monotonic()
        slow = client.get(f"{server.url}/slow")
        elapsed = time.monotonic() - started
        slow_pid = int((tmp_path / "slow.pid").read_text())
        after: list[tuple[dict[str, Any], float]] = []
        with ThreadPoolExecutor(2) as pool:
            for _ in range(8):  # overlapping pairs, until the worker that timed out answers one
                after += pool.map(lambda _: _get(server.url, 0.1), range(2))
                if any(body["pid"] == slow_pid for body, _ in after):
                    break
        mine = [(body, seconds) for body, seconds in after if body["pid"] == slow_pid]
    assert slow.status_code == 504, slow.text
    assert slow.headers["content-type"] == "application/json"
    assert slow.json()["message"]
    assert 0.9 <= elapsed < 2.0, elapsed  # the deadline, not the endpoint's 3 s
    assert mine, f"worker {slow_pid} did not answer again; pids seen: {[body['pid'] for body, _ in after]}"
    body, seconds = mine[0]
    assert seconds < 0.8, seconds  # not stuck behind the abandoned sleep
    assert body["cold_start"] is True  # the timed-out context was retired
    assert body["conn_pid"] == slow_pid
    _stopped_gracefully(server)
