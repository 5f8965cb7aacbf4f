"""`ASGIMiddleware` around a FastAPI app (DESIGN.md §3, §4, §5), against real uvicorn processes.

Each test starts its own server (`tests/servers.py`) on a module written into `tmp_path`, so
that cold starts, retired contexts and the process's peak memory start from a clean slate.
Options come from `APP_*` variables, read once by the app module at import.
"""

from __future__ import annotations

import importlib.util
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from servers import Server, serve
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette prefers `httpx2` for its TestClient and warns when it falls back to `httpx`:
    # a note about the test tool (httpx2 is not installed here), not about the app under test.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

APP = """
import asyncio
import logging
import os
import random
import sqlite3
import time
from contextlib import asynccontextmanager

from fastapi import BackgroundTasks, Depends, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from lambdify import ASGIMiddleware, LambdaContext, current_context
from lambdify.http.dependencies import lambda_context

if os.environ.get("APP_LOG"):
    logging.basicConfig(level=logging.INFO)  # lambdify's INIT_START/START/END/REPORT lines on stderr

MARKERS = os.environ.get("APP_MARKERS", "markers.txt")
DB = os.environ.get("APP_DB", "rows.db")
CREATED = [0]


class Conn:
    # A resource created in INIT: numbered, and stamped with the process that made it.
    def __init__(self):
        CREATED[0] += 1
        self.number = CREATED[0]
        self.pid = os.getpid()


CHECKS = [0]


def check(conn):
    CHECKS[0] += 1
    return True


def setup(ctx):
    ctx.resources.add("conn", Conn)
    ctx.resources.add("probe", Conn, check=check)  # checked at its first use in each invocation


def mark(what):
    with open(MARKERS, "a") as markers:
        markers.write(f"{what} {os.getpid()}\\n")


@asynccontextmanager
async def lifespan(app):
    mark("startup")
    yield
    mark("shutdown")


app = FastAPI(lifespan=lifespan)


def describe(request, context):
    lc = current_context()
    return {
        "same": lc is request.scope["lambdify.context"] is context,
        "request_id": lc.aws_request_id,
        "cold_start": lc.cold_start,
        "execution": lc.execution.id,
        "remaining_ms": lc.get_remaining_time_in_millis(),
        "pid": os.getpid(),
    }


@app.get("/ctx")
async def ctx_async(request: Request, context: LambdaContext = Depends(lambda_context)):
    return describe(request, context)


@app.get("/ctx-sync")
def ctx_sync(request: Request, context: LambdaContext = Depends(lambda_context)):
    return describe(request, context)


@app.get("/resource")
async def resource(context: LambdaContext = Depends(lambda_context)):
    conn = context.resources["conn"]
    return {"id": id(conn), "number": conn.number, "created": CREATED[0], "pid": conn.pid}


@app.get("/probe")
async def probe(context: LambdaContext = Depends(lambda_context)):
    first, again = context.resources["probe"], context.resources["probe"]
    return {"same": first is again, "checks": CHECKS[0], "invocations": context.execution.invocations}


@app.get("/fast")
async def fast():
    return {"ok": True}


@app.get("/slow-async")
async def slow_async():
    await asyncio.sleep(3)
    return {"done": True}


@app.get("/slow-sync")
def slow_sync():
    time.sleep(3)
    return {"done": True}


@app.get("/stream")
async def stream():
    async def chunks():
        for i in range(10):
            yield f"chunk {i}\\n".encode()
            await asyncio.sleep(0.3)

    return StreamingResponse(chunks(), media_type="text/plain")


def insert(n, kind):
    conn = sqlite3.connect(DB, timeout=60)
    try:
        conn.execute("PRAGMA busy_timeout = 60000")
        with conn:
            conn.execute("INSERT INTO rows (n, kind) VALUES (?, ?)", (n, kind))
    finally:
        conn.close()


async def write_later(n, kind, low, high):
    await asyncio.sleep(random.uniform(low, high))  # the work is really pending when the response goes out
    await asyncio.to_thread(insert, n, kind)


@app.post("/work/{n}")
async def work(n: int, background: BackgroundTasks):
    # BackgroundTasks run inside the request's own task, which uvicorn waits for anyway; the
    # deferred item and the stray task take longer, so only the middleware's flush saves them.
    background.add_task(write_later, n, "background", 0.05, 0.1)
    current_context().defer(write_later, n, "defer", 0.1, 0.2)
    asyncio.create_task(write_later(n, "task", 0.1, 0.2))  # fire and forget
    return {"n": n}


@app.get("/allocate")
def allocate():
    block = b"\\x01" * (400 * 1024 * 1024)  # written, so really resident
    size = len(block) // (1024 * 1024)
    del block
    return {"allocated_mb": size}


@app.websocket("/ws")
async def websocket(ws: WebSocket):
    await ws.accept()
    try:
        while True:
            await ws.send_text((await ws.receive_text()).upper())
    except WebSocketDisconnect:
        pass


OPTIONS = {}
if os.environ.get("APP_MEMORY_MB"):
    OPTIONS["memory_mb"] = int(os.environ["APP_MEMORY_MB"])
if os.environ.get("APP_PROVISIONED"):
    OPTIONS["provisioned"] = int(os.environ["APP_PROVISIONED"])

app.add_middleware(ASGIMiddleware, timeout=float(os.environ.get("APP_TIMEOUT", "1")), init=setup, **OPTIONS)
"""


def _write_app(folder: Path) -> None:
    (folder / "mw_app.py").write_text(textwrap.dedent(APP))


def _env(folder: Path, **extra: str) -> dict[str, str]:
    return {"APP_MARKERS": str(folder / "markers.txt"), "APP_DB": str(folder / "rows.db"), **extra}


def _server(folder: Path, **extra: str) -> AbstractContextManager[Server]:
    _write_app(folder)
    return serve("mw_app:app", cwd=folder, env=_env(folder, **extra))


def _markers(folder: Path) -> list[str]:
    path = folder / "markers.txt"
    return path.read_text().split()[::2] if path.exists() else []


def _stopped_gracefully(server: Server, folder: Path) -> None:
    # uvicorn re-raises the signal it caught once its shutdown is complete: -SIGTERM is a clean exit.
    assert server.returncode in (0, -signal.SIGTERM), server.stderr[-3000:]
    assert _markers(folder) == ["startup", "shutdown"], server.stderr[-3000:]


def _timed_get(client: httpx.Client, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


# --- the context reaches endpoints; cold starts; resources ---------------------------------------


def test_endpoints_see_the_context_and_cold_start_only_once(tmp_path: Path) -> None:
    with _server(tmp_path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        bodies = [client.get(path).json() for path in ["/ctx", "/ctx-sync", "/ctx", "/ctx-sync", "/ctx"]]
    assert [body["same"] for body in bodies] == [True] * 5  # scope key, current_context(), Depends(lambda_context)
    assert [body["cold_start"] for body in bodies] == [True, False, False, False, False]
    assert len({body["execution"] for body in bodies}) == 1  # one warm context per worker
    assert len({body["request_id"] for body in bodies}) == 5
    assert all(0 < body["remaining_ms"] <= 1000 for body in bodies)  # timeout=1
    _stopped_gracefully(server, tmp_path)
    assert "Traceback" not in server.stderr


def test_a_resource_made_in_init_is_reused_across_requests(tmp_path: Path) -> None:
    with _server(tmp_path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        bodies = [client.get("/resource").json() for _ in range(6)]
    assert len({body["id"] for body in bodies}) == 1
    assert {body["number"] for body in bodies} == {1}
    assert bodies[-1]["created"] == 1
    _stopped_gracefully(server, tmp_path)


def test_each_request_is_one_invocation_of_the_shared_context(tmp_path: Path) -> None:
    with _server(tmp_path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        bodies = [client.get("/probe").json() for _ in range(4)]
    assert all(body["same"] for body in bodies)
    assert [body["invocations"] for body in bodies] == [1, 2, 3, 4]
    # Created in the first request; checked once (at its first use) in each request after it.
    assert [body["checks"] for body in bodies] == [0, 1, 2, 3]
    _stopped_gracefully(server, tmp_path)


# --- timeouts ------------------------------------------------------------------------------------


def test_slow_endpoints_get_504_while_others_are_served(tmp_path: Path) -> None:
    with _server(tmp_path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        before = client.get("/ctx").json()
        with ThreadPoolExecutor(4) as pool:
            slow = [pool.submit(_timed_get, client, path) for path in ("/slow-async", "/slow-sync")]
            fast: list[tuple[httpx.Response, float]] = []
            while not all(future.done() for future in slow) and len(fast) < 40:
                fast.append(_timed_get(client, "/fast"))
                time.sleep(0.05)
            answers = [future.result() for future in slow]
        after = client.get("/ctx").json()
    for response, elapsed in answers:
        assert response.status_code == 504, response.text
        assert response.headers["content-type"] == "application/json"
        assert isinstance(response.json()["message"], str) and response.json()["message"]
        assert 0.9 <= elapsed < 2.0, elapsed  # at the 1 s deadline, not when the endpoint ends (3 s)
    assert len(fast) >= 5
    assert [response.status_code for response, _ in fast] == [200] * len(fast)
    assert max(elapsed for _, elapsed in fast) < 0.5
    # A timed-out context is retired, as Lambda resets its environment (a /fast request that came
    # after the 504s may already have made the new one, so this is not necessarily a cold start).
    assert before["cold_start"] is True
    assert after["execution"] != before["execution"]
    _stopped_gracefully(server, tmp_path)


def test_stream_past_the_deadline_is_cut_off(tmp_path: Path) -> None:
    chunks: list[bytes] = []
    error: Exception | None = None
    with _server(tmp_path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        started = time.monotonic()
        try:
            with client.stream("GET", "/stream") as response:
                assert response.status_code == 200
                for chunk in response.iter_raw():
                    chunks.append(chunk)
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            error = exc
        elapsed = time.monotonic() - started
        assert client.get("/fast").status_code == 200  # the server is fine
    body = b"".join(chunks)
    assert error is not None or body.count(b"\n") < 10, body  # an error, or at least an incomplete body
    assert b"chunk 0\n" in body
    assert b"chunk 9\n" not in body
    assert elapsed < 2.5, elapsed  # cut at ~1 s, not a hang until the stream's natural end (3 s)
    _stopped_gracefully(server, tmp_path)


# --- background work survives SIGTERM --------------------------------------------------------------


def test_background_work_of_answered_requests_survives_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "rows.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE rows (n INTEGER NOT NULL, kind TEXT NOT NULL, UNIQUE (n, kind))")
    conn.close()

    total, in_flight, signal_after = 300, 100, 100
    ok: list[int] = []
    failed: list[int] = []
    lock = threading.Lock()
    enough = threading.Event()

    with _server(tmp_path, APP_TIMEOUT="30") as server:
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        with httpx.Client(base_url=server.url, timeout=30, limits=limits) as client:

            def post(n: int) -> None:
                try:
                    response = client.post(f"/work/{n}")
                except httpx.HTTPError:
                    with lock:
                        failed.append(n)
                    return
                with lock:
                    (ok if response.status_code == 200 and response.json() == {"n": n} else failed).append(n)
                    if len(ok) >= signal_after:
                        enough.set()

            with ThreadPoolExecutor(in_flight) as pool:
                futures = [pool.submit(post, n) for n in range(total)]
                assert enough.wait(30), "fewer than 100 answers in 30 s"
                server.proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                for future in futures:
                    future.result()
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail("uvicorn did not exit within 30 s of SIGTERM")
        exit_seconds = time.monotonic() - signalled

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT n, kind FROM rows").fetchall()
    conn.close()
    kinds: dict[int, set[str]] = {}
    for n, kind in rows:
        kinds.setdefault(n, set()).add(kind)
    missing = {n: sorted(kinds.get(n, set())) for n in ok if kinds.get(n) != {"background", "defer", "task"}}
    assert len(ok) + len(failed) == total
    assert len(ok) >= signal_after
    assert missing == {}, f"{len(missing)} answered requests lost background work: {dict(list(missing.items())[:5])}"
    _stopped_gracefully(server, tmp_path)
    assert exit_seconds < 30
    assert "Traceback" not in server.stderr, server.stderr[-3000:]


# --- lifespan, provisioned contexts, websockets -------------------------------------------------------


def _wait_for(server: Server, text: str, count: int, seconds: float = 5.0) -> str:
    deadline = time.monotonic() + seconds
    while True:
        stderr = server.output()[1]
        if stderr.count(text) >= count or time.monotonic() > deadline:
            return stderr
        time.sleep(0.05)


def test_lifespan_runs_once_and_provisioned_contexts_init_at_startup(tmp_path: Path) -> None:
    with (
        _server(tmp_path, APP_LOG="1", APP_PROVISIONED="2") as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        before = _wait_for(server, "INIT_START", 2)
        bodies = [client.get("/ctx").json() for _ in range(3)]
    assert before.count("INIT_START") == 2, before
    assert "START RequestId" not in before  # both INITs ran before the first request
    assert [body["cold_start"] for body in bodies] == [False] * 3  # INIT already ran, at startup
    assert server.stderr.count("INIT_START") == 2, server.stderr
    assert server.stderr.count("START RequestId") == 3
    for body in bodies:  # each request's log lines carry the id its context reports
        for line in ("START", "END", "REPORT"):
            assert f"{line} RequestId: {body['request_id']}" in server.stderr
    _stopped_gracefully(server, tmp_path)
    assert _markers(tmp_path) == ["startup", "shutdown"]  # the app's own lifespan ran exactly once each way


def test_websocket_passes_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Neither `websockets` nor `wsproto` is installed, so uvicorn cannot serve websockets here:
    # the app (the same module the servers run) is driven in-process by Starlette's TestClient.
    _write_app(tmp_path)
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location("mw_app_inprocess", tmp_path / "mw_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "mw_app_inprocess", module)
    spec.loader.exec_module(module)
    with TestClient(module.app) as client:
        with client.websocket_connect("/ws") as ws:
            for text in ("hello", "lambda"):
                ws.send_text(text)
                assert ws.receive_text() == text.upper()
        assert client.get("/ctx").json()["same"] is True
    assert _markers(tmp_path) == ["startup", "shutdown"]


# --- memory ceiling ------------------------------------------------------------------------------------


def test_memory_ceiling_answers_500_and_retires_the_context(tmp_path: Path) -> None:
    with (
        _server(tmp_path, APP_MEMORY_MB="256", APP_TIMEOUT="10") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        first = client.get("/ctx").json()
        assert client.get("/ctx").json()["cold_start"] is False
        over = client.get("/allocate")
        after = client.get("/ctx")
        again = client.get("/ctx")
    assert first["cold_start"] is True
    assert over.status_code == 500, over.text
    assert over.headers["content-type"] == "application/json"
    assert "memory" in over.json()["message"].lower()
    assert after.status_code == 200  # the worker keeps serving
    assert after.json()["cold_start"] is True  # ... on a new context: the old one was retired
    assert after.json()["execution"] != first["execution"]
    assert after.json()["pid"] == first["pid"]
    assert again.json()["cold_start"] is False
    _stopped_gracefully(server, tmp_path)
