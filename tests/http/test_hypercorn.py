"""Acceptance under hypercorn, with its asyncio worker and its trio worker, against real processes.

`ASGIMiddleware` around a FastAPI app (added with `add_middleware` and wrapped around it), and
`fn.asgi` of a sync and an async `@handler` function. Each server runs a module written into a
temporary directory (`tests/servers.py` starts it on a free 127.0.0.1 port and stops it); one
server per module and variant, shared by that variant's tests, to keep the suite light.
"""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from servers import HOST, PORT, Server, serve_command

WORKERS = ["asyncio", "trio"]
TIMEOUT_MESSAGE = {"message": "Endpoint request timed out"}
PAST_THE_TIMEOUT = 1.5  # seconds: both apps have timeout=1

MIDDLEWARE_APP = """
import os
from pathlib import Path

import anyio
from fastapi import BackgroundTasks, FastAPI
from fastapi.responses import StreamingResponse

from lambdify import ASGIMiddleware, current_context

OUT = Path(os.environ["APP_OUT"])

app = FastAPI()


@app.get("/hello")
async def hello():
    context = current_context()
    return {
        "message": "hello",
        "request_id": context.aws_request_id,
        "cold": context.cold_start,
        "execution": context.execution.id,
    }


@app.get("/stream")
async def stream():
    execution = current_context().execution.id

    async def body():
        yield execution.encode()

    return StreamingResponse(body(), media_type="text/plain")


@app.get("/sleep")
async def sleep():
    await anyio.sleep(5)
    return {"late": True}


def write(name):
    (OUT / name).write_text("sync")


async def write_later(name):
    await anyio.sleep(0.3)  # after the response has gone
    await anyio.Path(OUT / name).write_text("async")


@app.get("/background/{name}")
async def background(name: str, tasks: BackgroundTasks):
    tasks.add_task(write, name + ".sync")
    tasks.add_task(write_later, name + ".async")
    return {"queued": name}


if os.environ["APP_WRAP"] == "add_middleware":
    app.add_middleware(ASGIMiddleware, timeout=1)
else:
    app = ASGIMiddleware(app, timeout=1)
"""

FUNCTION_APP = """
import anyio

from lambdify import handler


def describe(kind, event, context):
    return {
        "kind": kind,
        "method": event["requestContext"]["http"]["method"],
        "path": event["rawPath"],
        "request_id": context.aws_request_id,
        "cold": context.cold_start,
        "execution": context.execution.id,
    }


@handler(timeout=1)
def sync_hello(event, context):
    return describe("sync", event, context)


@handler(timeout=1)
async def async_hello(event, context):
    await anyio.sleep(0)
    return describe("async", event, context)


sync_app = sync_hello.asgi
async_app = async_hello.asgi
"""


@dataclass
class Running:
    """A server under test, and what its tests need to know about it."""

    server: Server
    variant: str  # "add_middleware"/"wrapped", or the handler's kind: "sync"/"async"
    out: Path | None = None  # where the app's background tasks write

    @property
    def url(self) -> str:
        return self.server.url


def get(running: Running, client: httpx.Client, path: str) -> httpx.Response:
    """GET `path`; if the server did not answer, fail with what it wrote on stderr."""
    try:
        return client.get(running.url + path)
    except httpx.HTTPError as exc:
        pytest.fail(f"GET {path}: {exc!r}\n--- server stderr\n{running.server.output()[1]}")


def stderr_size(running: Running) -> int:
    return len(running.server.output()[1])


def assert_no_traceback(running: Running, since: int) -> None:
    """The server logged no traceback after `since` (checked in the test that caused it, rather
    than at the shared server's teardown, which would be reported against the next variant)."""
    stderr = running.server.output()[1][since:]
    assert "Traceback" not in stderr, stderr


def hypercorn(
    app_spec: str, worker: str, cwd: Path, env: dict[str, str] | None = None
) -> AbstractContextManager[Server]:
    """`python -m hypercorn APP_SPEC` with the `worker` class, on a free 127.0.0.1 port."""
    command = [sys.executable, "-m", "hypercorn", "--bind", f"{HOST}:{PORT}", "--worker-class", worker]
    return serve_command([*command, "--graceful-timeout", "5", app_spec], cwd=cwd, env=env)


# -- ASGIMiddleware around FastAPI ---------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[(worker, wrap) for worker in WORKERS for wrap in ("add_middleware", "wrapped")],
    ids=lambda param: f"{param[0]}-{param[1]}",
)
def middleware_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    worker, wrap = request.param
    cwd = tmp_path_factory.mktemp(f"hypercorn-{worker}-{wrap}")
    out = cwd / "out"
    out.mkdir()
    (cwd / "middleware_app.py").write_text(textwrap.dedent(MIDDLEWARE_APP))
    with hypercorn("middleware_app:app", worker, cwd, {"APP_OUT": str(out), "APP_WRAP": wrap}) as server:
        yield Running(server, wrap, out)


def test_middleware_serves_a_get(middleware_server: Running) -> None:
    since = stderr_size(middleware_server)
    with httpx.Client(timeout=10) as client:  # one keep-alive connection, as browsers and proxies use
        first = get(middleware_server, client, "/hello")
        second = get(middleware_server, client, "/hello")
        time.sleep(PAST_THE_TIMEOUT)
        third = get(middleware_server, client, "/hello")
    responses = [first, second, third]
    assert [response.status_code for response in responses] == [200, 200, 200]
    bodies = [response.json() for response in responses]
    assert [body["message"] for body in bodies] == ["hello"] * 3
    assert len({body["request_id"] for body in bodies}) == 3
    # The requests ended with their responses: the context stayed warm, past the 1 s timeout too.
    assert [body["execution"] for body in bodies] == [bodies[0]["execution"]] * 3
    assert [body["cold"] for body in bodies[1:]] == [False, False]
    assert_no_traceback(middleware_server, since)


def test_a_streamed_response_on_a_kept_alive_connection_ends_its_invocation(middleware_server: Running) -> None:
    # The keep-alive timer hypercorn starts as the response ends is the connection's: neither it
    # nor what it starts later (its wait, after a streamed response) is the invocation's
    # background work, so the invocation does not run on to its deadline and reset the context.
    since = stderr_size(middleware_server)
    with httpx.Client(timeout=10) as client:
        streamed = get(middleware_server, client, "/stream")
        time.sleep(PAST_THE_TIMEOUT)  # the connection idle, within hypercorn's 5 s keep-alive
        after = get(middleware_server, client, "/hello")
    assert streamed.status_code == 200 and after.status_code == 200
    assert after.json()["execution"] == streamed.text  # the context stayed warm
    assert_no_traceback(middleware_server, since)


def test_middleware_answers_504_at_the_deadline(middleware_server: Running) -> None:
    with httpx.Client(timeout=10) as client:
        started = time.monotonic()
        response = get(middleware_server, client, "/sleep")
        elapsed = time.monotonic() - started
        after = get(middleware_server, client, "/hello")  # the next request is served as usual
    assert response.status_code == 504
    assert response.json() == TIMEOUT_MESSAGE
    assert response.headers["x-amzn-requestid"]
    assert 0.9 <= elapsed < 3.0  # timeout=1; the route sleeps 5 s
    assert after.status_code == 200 and after.json()["message"] == "hello"


def test_middleware_finishes_background_tasks(middleware_server: Running) -> None:
    assert middleware_server.out is not None
    with httpx.Client(timeout=10) as client:
        response = get(middleware_server, client, "/background/job")
    assert response.status_code == 200 and response.json() == {"queued": "job"}
    files = [middleware_server.out / "job.sync", middleware_server.out / "job.async"]
    deadline = time.monotonic() + 3.0  # the async task writes 0.3 s after the response
    while time.monotonic() < deadline and not all(path.exists() for path in files):
        time.sleep(0.05)
    assert [path.read_text() if path.exists() else None for path in files] == ["sync", "async"]


# -- fn.asgi of a @handler function ----------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[(worker, kind) for worker in WORKERS for kind in ("sync", "async")],
    ids=lambda param: f"{param[0]}-{param[1]}",
)
def function_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    worker, kind = request.param
    cwd = tmp_path_factory.mktemp(f"hypercorn-{worker}-{kind}")
    (cwd / "function_app.py").write_text(textwrap.dedent(FUNCTION_APP))
    with hypercorn(f"function_app:{kind}_app", worker, cwd) as server:
        yield Running(server, kind)


def test_function_asgi_answers_with_the_result_as_json(function_server: Running) -> None:
    since = stderr_size(function_server)
    with httpx.Client(timeout=10) as client:
        first = get(function_server, client, "/")
        second = get(function_server, client, "/")
        time.sleep(PAST_THE_TIMEOUT)
        third = get(function_server, client, "/")
    for response in (first, second, third):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        # API Gateway v2: a dict without statusCode is the JSON body of a 200
        assert body == {
            "kind": function_server.variant,
            "method": "GET",
            "path": "/",
            "request_id": response.headers["x-amzn-requestid"],
            "cold": body["cold"],
            "execution": first.json()["execution"],  # one warm context served all three
        }
    assert first.json()["cold"] is True and second.json()["cold"] is third.json()["cold"] is False
    assert len({response.json()["request_id"] for response in (first, second, third)}) == 3
    assert_no_traceback(function_server, since)
