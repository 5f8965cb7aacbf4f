"""`lambda_handler` under AWS's own runtime client (`python -m awslambdaric module.handler`),
against a Runtime API on 127.0.0.1 (DESIGN.md §8): the events of every HTTP source round-trip,
lifespan startup once and shutdown on SIGTERM, one loop, background work done before `/response`,
other events, and a Flask app."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lambda_events import HTTP_SOURCES, SQS_EVENT, http_event
from lambda_runtime import RuntimeAPI

BINARY = bytes(range(256))

FASTAPI_APP = """
import asyncio, os, pathlib
from contextlib import asynccontextmanager
from fastapi import BackgroundTasks, FastAPI, Request, Response
from lambdify import current_context, lambda_handler

OUT = pathlib.Path(os.environ["TEST_OUT"])


def note(name, text):
    with open(OUT / name, "a") as f:
        f.write(text + "\\n")


@asynccontextmanager
async def lifespan(app):
    note("lifespan", "startup")
    yield
    note("lifespan", "shutdown")


app = FastAPI(lifespan=lifespan)


@app.api_route("/echo/{rest:path}", methods=["GET", "POST"])
async def echo(request: Request, rest: str):
    response = Response(await request.body(), media_type=request.headers.get("content-type"))
    response.headers["x-query"] = "&".join(f"{k}={v}" for k, v in request.query_params.multi_items())
    response.headers["x-path"] = request.url.path
    response.headers["x-request-id"] = current_context().aws_request_id
    response.headers.append("x-many", "1")
    response.headers.append("x-many", "2")
    for name, value in request.cookies.items():
        response.set_cookie("got-" + name, value)
    return response


@app.get("/loop")
async def loop():
    return {"loop": id(asyncio.get_running_loop()), "pid": os.getpid()}


@app.get("/background")
async def background(tasks: BackgroundTasks):
    request_id = current_context().aws_request_id

    async def later(name):
        await asyncio.sleep(0.2)
        note(name + "-" + request_id, "done")

    tasks.add_task(later, "background")
    current_context().defer(later("deferred"))
    return {"ok": True}


def on_event(event, context):
    return {"handled": event["Records"][0]["eventSource"], "request_id": context.aws_request_id}


handler = lambda_handler(app, on_event=on_event if os.environ.get("WITH_ON_EVENT") else None)
"""

FLASK_APP = """
import os, pathlib
from flask import Flask, request
from lambdify import current_context, lambda_handler

OUT = pathlib.Path(os.environ["TEST_OUT"])
app = Flask("flask_app")


@app.route("/echo/<path:rest>", methods=["GET", "POST"])
def echo(rest):
    response = app.response_class(request.get_data(), content_type=request.content_type)
    response.headers["x-query"] = "&".join(f"{k}={v}" for k, v in request.args.items(multi=True))
    response.headers.add("x-many", "1")
    response.headers.add("x-many", "2")
    for name, value in request.cookies.items():
        response.set_cookie("got-" + name, value)
    request_id = current_context().aws_request_id
    current_context().defer(lambda: (OUT / ("deferred-" + request_id)).write_text("done"))
    return response


handler = lambda_handler(app)
"""


class Runtime:
    def __init__(self, api: RuntimeAPI, process: subprocess.Popen[bytes], out: Path) -> None:
        self.api, self.process, self.out = api, process, out


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    started: list[Runtime] = []

    def start(source: str, **env: str) -> Runtime:
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        (tmp_path / "lambda_app.py").write_text(source)

        def snapshot(request_id: str) -> list[str]:
            return sorted(path.name for path in out.iterdir() if request_id in path.name)

        api = RuntimeAPI(on_response=snapshot)
        environ = {
            **os.environ,
            "AWS_LAMBDA_RUNTIME_API": api.address,
            # The python3.12+ runtimes' setting: /next is polled from a thread, so that the main
            # thread takes signals (SIGTERM) while idle.
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            "AWS_LAMBDA_FUNCTION_NAME": "e2e",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_REGION": "us-east-1",
            "PYTHONPATH": str(tmp_path),
            "TEST_OUT": str(out),
            **env,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", "lambda_app.handler"],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        runtime = Runtime(api, process, out)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        if runtime.process.poll() is None:
            runtime.process.kill()
        runtime.process.wait(10)
        runtime.api.close()


def _headers(result: dict[str, Any]) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for name, value in (result.get("headers") or {}).items():
        got.setdefault(name.lower(), []).extend([value] if name.lower() == "set-cookie" else value.split(", "))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        got[name.lower()] = list(values)
    if result.get("cookies"):
        got["set-cookie"] = list(result["cookies"])
    return got


def _check_round_trip(result: dict[str, Any], source: str) -> None:
    assert result["statusCode"] == 200
    assert result["isBase64Encoded"] is True and base64.b64decode(result["body"]) == BINARY
    got = _headers(result)
    assert got["x-query"] == (["q=2&s=a b"] if source == "alb" else ["q=1&q=2&s=a b"])
    assert got["x-many"] == ["1", "2"]
    assert sorted(cookie.split(";")[0] for cookie in got["set-cookie"]) == ["got-a=1", "got-b=2"]
    if source.startswith("alb"):
        assert result["statusDescription"] == "200 OK"


def _request(source: str) -> dict[str, Any]:
    headers = [(b"content-type", b"application/octet-stream"), (b"cookie", b"a=1; b=2")]
    return http_event(source, "POST", "/echo/x", b"q=1&q=2&s=a%20b", headers, BINARY)


@pytest.mark.timeout(60)
def test_fastapi_under_awslambdaric(start: Any) -> None:
    runtime = start(FASTAPI_APP)
    api = runtime.api
    for source in HTTP_SOURCES:
        kind, result, request_id = api.invoke(_request(source))
        assert kind == "response", result
        _check_round_trip(result, source)
        assert _headers(result)["x-request-id"] == [request_id]  # AWS's request id reaches the app

    loops = set()
    for _ in range(5):
        kind, result, _ = api.invoke(http_event("v2", path="/loop"))
        loops.add(json.loads(result["body"])["loop"])
    assert len(loops) == 1  # one event loop for the environment's life

    kind, result, request_id = api.invoke(http_event("v2", path="/background"))
    assert kind == "response" and json.loads(result["body"]) == {"ok": True}
    # Both writes exist at the moment the answer reached /response (Lambda freezes right after).
    assert api.snapshots[request_id] == [f"background-{request_id}", f"deferred-{request_id}"]

    kind, error, _ = api.invoke(SQS_EVENT)
    assert kind == "error"
    assert "SQS" in error["errorMessage"] and "on_event" in error["errorMessage"]

    assert (runtime.out / "lifespan").read_text() == "startup\n"  # once, over all those events
    runtime.process.send_signal(signal.SIGTERM)
    assert runtime.process.wait(15) == 0
    assert (runtime.out / "lifespan").read_text() == "startup\nshutdown\n"
    assert api.init_errors == []


@pytest.mark.timeout(60)
def test_other_events_reach_on_event(start: Any) -> None:
    api = start(FASTAPI_APP, WITH_ON_EVENT="1").api
    kind, result, request_id = api.invoke(SQS_EVENT)
    assert (kind, result) == ("response", {"handled": "aws:sqs", "request_id": request_id})


@pytest.mark.timeout(60)
def test_flask_under_awslambdaric(start: Any) -> None:
    api = start(FLASK_APP).api
    for source in HTTP_SOURCES:
        kind, result, request_id = api.invoke(_request(source))
        assert kind == "response", result
        _check_round_trip(result, source)
        assert api.snapshots[request_id] == [f"deferred-{request_id}"]


def test_init_failure_is_reported(start: Any) -> None:
    source = textwrap.dedent(
        """
        from contextlib import asynccontextmanager
        from starlette.applications import Starlette
        from lambdify import lambda_handler

        @asynccontextmanager
        async def lifespan(app):
            raise RuntimeError("no database")
            yield

        handler = lambda_handler(Starlette(lifespan=lifespan))
        """
    )
    runtime = start(source)
    assert runtime.process.wait(20) != 0
    assert len(runtime.api.init_errors) == 1
    assert "no database" in runtime.api.init_errors[0]["errorMessage"]
