"""Wrapping an app in `ASGIMiddleware` does not change the outcome of its own test suite (DESIGN.md §5).

One FastAPI app with the features a real app's suite exercises, built fresh for each test,
bare and wrapped; every test below runs against both and must pass identically, under
`filterwarnings = error` (no leaked loops, threads or sockets, no ResourceWarning, no
deprecation warning). In-process, through Starlette's TestClient used as a context manager,
so that the app's lifespan runs.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import (
    APIRouter,
    BackgroundTasks,
    Cookie,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi import Path as PathParam
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    StreamingResponse,
)
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lambdify import ASGIMiddleware

with warnings.catch_warnings():
    # Starlette prefers `httpx2` for its TestClient and warns when it falls back to `httpx`:
    # a note about the test tool (httpx2 is not installed here), not about the app under test.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

FILE_BODY = b"0123456789" * 100
IDENTITY = {"accept-encoding": "identity"}  # no gzip: the test is about the response's own headers


# --- the app -------------------------------------------------------------------------------------


class Item(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    price: float = Field(gt=0)
    tags: list[str] = []


class ItemOut(BaseModel):
    id: int
    name: str
    price: float
    tags: list[str]


class TeapotError(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class Pager:
    """A class dependency."""

    def __init__(self, page: int = 1) -> None:
        self.page = page


# Dependencies live at module level: FastAPI resolves the (string) annotations in module globals.


def common(skip: int = 0, limit: Annotated[int, Query(le=100)] = 10) -> dict[str, int]:
    return {"skip": skip, "limit": limit}


async def session(request: Request) -> AsyncIterator[str]:
    events: list[str] = request.app.state.events
    events.append("dep-open")
    try:
        yield "session-1"
    finally:
        events.append("dep-close")


def require_token(x_token: Annotated[str | None, Header()] = None) -> str:
    if x_token != "secret":
        raise HTTPException(401, "bad token", headers={"www-authenticate": "Token"})
    return x_token


class PureHeaderMiddleware:
    """A pure ASGI middleware of the app's own: adds `x-pure` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("x-pure", "1")
            await send(message)

        await self.app(scope, receive, send_wrapper)


def make_app(wrapped: bool, folder: Path) -> FastAPI:
    events: list[str] = []
    data_file = folder / "data.txt"
    data_file.write_bytes(FILE_BODY)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"greeting": "hello from lifespan"}
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)
    app.state.events = events

    @app.exception_handler(TeapotError)
    async def teapot_handler(request: Request, exc: TeapotError) -> JSONResponse:
        return JSONResponse({"teapot": exc.reason}, status_code=418)

    @app.middleware("http")
    async def mark_requests(request: Request, call_next: Any) -> Response:
        request.state.marked = True
        response: Response = await call_next(request)
        response.headers["x-http-mw"] = "1"
        return response

    app.add_middleware(PureHeaderMiddleware)
    app.add_middleware(GZipMiddleware, minimum_size=1000)

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/items/{item_id}")
    async def read_item(item_id: int = PathParam(ge=1)) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/search")
    async def search(
        q: Annotated[str, Query(min_length=2)],
        limit: Annotated[int, Query(le=100)] = 10,
        tag: Annotated[list[str] | None, Query()] = None,
    ) -> dict[str, Any]:
        return {"q": q, "limit": limit, "tags": tag or []}

    @app.post("/items", status_code=201, response_model=ItemOut)
    async def create_item(item: Item) -> dict[str, Any]:
        return {"id": 1, **item.model_dump(), "secret": "filtered out by response_model"}

    @app.put("/items/{item_id}", response_model=ItemOut)
    def replace_item(item_id: int, item: Item) -> dict[str, Any]:
        return {"id": item_id, **item.model_dump()}

    @app.patch("/items/{item_id}")
    async def patch_item(item_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        return {"id": item_id, "changed": sorted(changes)}

    @app.delete("/items/{item_id}", status_code=204)
    async def delete_item(item_id: int) -> Response:
        return Response(status_code=204)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                await asyncio.sleep(0.001)
                yield f"async {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/stream-sync")
    def stream_sync() -> StreamingResponse:
        return StreamingResponse((f"sync {i}\n" for i in range(5)), media_type="text/plain")

    @app.get("/file")
    async def file() -> FileResponse:
        return FileResponse(data_file, media_type="text/plain", filename="data.txt")

    @app.get("/redirect")
    async def redirect() -> RedirectResponse:
        return RedirectResponse("/")

    @app.get("/moved")
    async def moved() -> RedirectResponse:
        return RedirectResponse("/items/7", status_code=301)

    @app.get("/teapot")
    async def teapot() -> None:
        raise TeapotError("short and stout")

    @app.get("/forbidden")
    async def forbidden() -> None:
        raise HTTPException(403, "no entry", headers={"x-reason": "nope"})

    @app.get("/dep")
    async def with_dependencies(
        params: Annotated[dict[str, int], Depends(common)], pager: Annotated[Pager, Depends()]
    ) -> dict[str, int]:
        return {**params, "page": pager.page}

    @app.get("/yield-dep")
    async def with_yield_dependency(name: str = Depends(session)) -> dict[str, Any]:
        return {"session": name, "events": list(events)}

    @app.get("/protected")
    async def protected(token: str = Depends(require_token)) -> dict[str, str]:
        return {"token": token}

    @app.get("/events")
    async def list_events() -> list[str]:
        return events

    @app.get("/sync")
    def sync_endpoint() -> dict[str, bool]:
        return {"worker_thread": threading.current_thread() is not threading.main_thread()}

    @app.get("/async")
    async def async_endpoint() -> dict[str, bool]:
        return {"loop": asyncio.get_running_loop().is_running()}

    @app.get("/head")
    async def get_head() -> PlainTextResponse:
        return PlainTextResponse("twelve bytes")

    @app.head("/head")
    async def head_head() -> PlainTextResponse:
        return PlainTextResponse("twelve bytes")

    @app.options("/options")
    async def options() -> Response:
        return Response(headers={"allow": "GET, OPTIONS"})

    @app.get("/cookies/set")
    async def set_cookie(response: Response) -> dict[str, bool]:
        response.set_cookie("session", "abc123", httponly=True)
        return {"set": True}

    @app.get("/cookies/read")
    async def read_cookie(session: str | None = Cookie(None)) -> dict[str, str | None]:
        return {"session": session}

    @app.post("/background")
    async def background(tasks: BackgroundTasks) -> dict[str, bool]:
        async def later() -> None:
            await asyncio.sleep(0.01)
            events.append("bg-async")

        tasks.add_task(events.append, "bg-sync")
        tasks.add_task(later)
        return {"queued": True}

    @app.get("/middleware")
    async def middleware_state(request: Request) -> dict[str, bool]:
        return {"marked": request.state.marked}

    @app.get("/status/{code}")
    async def status(code: int) -> Response:
        return Response(status_code=code)

    @app.get("/headers")
    async def headers(x_token: str = Header()) -> JSONResponse:
        return JSONResponse({"token": x_token}, status_code=202, headers={"x-echo": x_token})

    @app.get("/error")
    async def error() -> None:
        raise RuntimeError("boom")

    @app.get("/chained-error")
    async def chained_error() -> None:
        try:
            {}["missing"]
        except KeyError as exc:
            raise LookupError("outer") from exc

    @app.get("/bytes")
    async def raw_bytes() -> Response:
        return Response(bytes(range(256)), media_type="application/octet-stream")

    @app.get("/html", response_class=HTMLResponse)
    async def html() -> str:
        return "<h1>hi</h1>"

    @app.get("/big")
    async def big() -> PlainTextResponse:
        return PlainTextResponse("lambda " * 1000)

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    @app.get("/lifespan-state")
    async def lifespan_state(request: Request) -> dict[str, str]:
        return {"greeting": request.state.greeting}

    @app.get("/probe")
    async def probe(request: Request) -> dict[str, bool]:
        return {"wrapped": "lambdify.context" in request.scope}

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                message = await ws.receive_json()
                if message.get("close"):
                    await ws.close(code=4001)
                    return
                await ws.send_json({"echo": message})
        except WebSocketDisconnect:
            pass

    router = APIRouter(prefix="/api/v1", tags=["users"])

    @router.get("/users/{user_id}")
    async def user(user_id: int) -> dict[str, int]:
        return {"user_id": user_id}

    app.include_router(router)

    async def sub_index(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"sub {request.scope['root_path']}")

    app.mount("/sub", Starlette(routes=[Route("/", sub_index)]))

    if wrapped:
        app.add_middleware(ASGIMiddleware, timeout=10)
    return app


# --- fixtures ---------------------------------------------------------------------------------------

MODES = [pytest.param(False, id="bare"), pytest.param(True, id="wrapped")]


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.fixture(params=MODES)
def wrapped(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def app(wrapped: bool, tmp_path: Path) -> FastAPI:
    return make_app(wrapped, tmp_path)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client
    gc.collect()  # anything left unclosed warns now, inside this test


# --- the app's suite ------------------------------------------------------------------------------------


def test_wrapping_is_in_effect(client: TestClient, wrapped: bool) -> None:
    assert client.get("/probe").json() == {"wrapped": wrapped}


def test_root(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"hello": "world"}
    assert response.headers["content-type"] == "application/json"


def test_path_validation(client: TestClient) -> None:
    assert client.get("/items/42").json() == {"item_id": 42}
    not_int = client.get("/items/abc")
    assert not_int.status_code == 422
    assert not_int.json()["detail"][0]["loc"] == ["path", "item_id"]
    assert client.get("/items/0").status_code == 422


def test_query_validation(client: TestClient) -> None:
    response = client.get("/search", params=[("q", "lambda"), ("tag", "a"), ("tag", "b")])
    assert response.json() == {"q": "lambda", "limit": 10, "tags": ["a", "b"]}
    assert client.get("/search").status_code == 422
    assert client.get("/search", params={"q": "x"}).status_code == 422
    assert client.get("/search", params={"q": "ok", "limit": 101}).status_code == 422


def test_body_validation_and_response_model(client: TestClient) -> None:
    response = client.post("/items", json={"name": "pen", "price": 1.5})
    assert response.status_code == 201
    assert response.json() == {"id": 1, "name": "pen", "price": 1.5, "tags": []}  # "secret" filtered out


def test_invalid_body_is_422(client: TestClient) -> None:
    response = client.post("/items", json={"name": "", "price": -1})
    assert response.status_code == 422
    assert sorted(tuple(error["loc"]) for error in response.json()["detail"]) == [("body", "name"), ("body", "price")]
    assert client.post("/items", content=b"not json", headers={"content-type": "application/json"}).status_code == 422


def test_put_patch_delete(client: TestClient) -> None:
    assert client.put("/items/3", json={"name": "cup", "price": 2, "tags": ["x"]}).json() == {
        "id": 3,
        "name": "cup",
        "price": 2.0,
        "tags": ["x"],
    }
    assert client.patch("/items/3", json={"price": 3, "name": "mug"}).json() == {"id": 3, "changed": ["name", "price"]}
    deleted = client.delete("/items/3")
    assert deleted.status_code == 204
    assert deleted.content == b""


def test_async_streaming_response(client: TestClient) -> None:
    with client.stream("GET", "/stream") as response:
        lines = list(response.iter_lines())
    assert response.status_code == 200
    assert lines == [f"async {i}" for i in range(5)]


def test_sync_streaming_response(client: TestClient) -> None:
    response = client.get("/stream-sync")
    assert response.text == "".join(f"sync {i}\n" for i in range(5))
    assert "content-length" not in response.headers


def test_file_response(client: TestClient) -> None:
    response = client.get("/file", headers=IDENTITY)
    assert response.status_code == 200
    assert response.content == FILE_BODY
    assert response.headers["content-length"] == str(len(FILE_BODY))
    assert response.headers["content-disposition"] == 'attachment; filename="data.txt"'
    assert "etag" in response.headers and "last-modified" in response.headers


def test_file_range_request(client: TestClient) -> None:
    response = client.get("/file", headers={"range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.content == FILE_BODY[10:20]
    assert response.headers["content-range"] == f"bytes 10-19/{len(FILE_BODY)}"


def test_redirects(client: TestClient) -> None:
    response = client.get("/redirect", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/"
    assert client.get("/redirect").json() == {"hello": "world"}
    moved = client.get("/moved", follow_redirects=False)
    assert moved.status_code == 301
    assert client.get("/moved").json() == {"item_id": 7}


def test_custom_exception_handler(client: TestClient) -> None:
    response = client.get("/teapot")
    assert response.status_code == 418
    assert response.json() == {"teapot": "short and stout"}


def test_http_exception_with_headers(client: TestClient) -> None:
    response = client.get("/forbidden")
    assert response.status_code == 403
    assert response.json() == {"detail": "no entry"}
    assert response.headers["x-reason"] == "nope"


def test_dependencies(client: TestClient) -> None:
    assert client.get("/dep").json() == {"skip": 0, "limit": 10, "page": 1}
    assert client.get("/dep", params={"skip": 5, "limit": 20, "page": 3}).json() == {"skip": 5, "limit": 20, "page": 3}
    assert client.get("/dep", params={"limit": 1000}).status_code == 422


def test_yield_dependency_opens_and_closes(client: TestClient) -> None:
    body = client.get("/yield-dep").json()
    assert body["session"] == "session-1"
    assert body["events"] == ["startup", "dep-open"]
    assert client.get("/events").json() == ["startup", "dep-open", "dep-close"]


def test_dependency_raising_http_exception(client: TestClient) -> None:
    refused = client.get("/protected")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Token"
    assert client.get("/protected", headers={"x-token": "secret"}).json() == {"token": "secret"}


def test_sync_and_async_endpoints(client: TestClient) -> None:
    assert client.get("/sync").json() == {"worker_thread": True}
    assert client.get("/async").json() == {"loop": True}


def test_head(client: TestClient) -> None:
    response = client.head("/head", headers=IDENTITY)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "12"
    assert client.get("/head").text == "twelve bytes"
    assert client.head("/").status_code == 405  # FastAPI routes GET only where declared


def test_options(client: TestClient) -> None:
    response = client.options("/options")
    assert response.status_code == 200
    assert response.headers["allow"] == "GET, OPTIONS"


def test_cookies_round_trip(client: TestClient) -> None:
    response = client.get("/cookies/set")
    assert "session=abc123" in response.headers["set-cookie"]
    assert "httponly" in response.headers["set-cookie"].lower()
    assert client.get("/cookies/read").json() == {"session": "abc123"}
    client.cookies.clear()
    assert client.get("/cookies/read").json() == {"session": None}


def test_background_tasks_run_after_the_response(client: TestClient) -> None:
    assert client.post("/background").json() == {"queued": True}
    assert client.get("/events").json() == ["startup", "bg-sync", "bg-async"]


def test_own_middlewares_both_run(client: TestClient) -> None:
    response = client.get("/middleware")
    assert response.json() == {"marked": True}
    assert response.headers["x-pure"] == "1"
    assert response.headers["x-http-mw"] == "1"
    assert client.get("/nope").headers["x-pure"] == "1"


def test_gzip_middleware(client: TestClient) -> None:
    response = client.get("/big", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.text == "lambda " * 1000
    raw = client.get("/big", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert gzip.compress(raw.content)  # the plain body is the same text
    assert raw.text == response.text


def test_websocket(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"n": 1})
        assert ws.receive_json() == {"echo": {"n": 1}}
        ws.send_json({"close": True})
        closed = ws.receive()
    assert closed == {"type": "websocket.close", "code": 4001, "reason": ""}


def test_status_codes(client: TestClient) -> None:
    for code in (200, 201, 202, 204, 304, 400, 409, 418, 500, 503):
        assert client.get(f"/status/{code}").status_code == code


def test_headers_and_custom_json_response(client: TestClient) -> None:
    response = client.get("/headers", headers={"x-token": "t-1"})
    assert response.status_code == 202
    assert response.json() == {"token": "t-1"}
    assert response.headers["x-echo"] == "t-1"
    missing = client.get("/headers")
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["header", "x-token"]


def test_unhandled_error_reaches_the_test_client(client: TestClient) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        client.get("/error")


def test_unhandled_error_keeps_its_cause(client: TestClient) -> None:
    # (Not `__context__`: the app's own `@app.middleware("http")` already replaces that with an ExceptionGroup.)
    with pytest.raises(LookupError, match="outer") as info:
        client.get("/chained-error")
    assert isinstance(info.value.__cause__, KeyError)  # `raise ... from exc`
    assert info.value.__cause__.args == ("missing",)


def test_unhandled_error_is_500(app: FastAPI) -> None:
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/error")
        assert client.get("/").status_code == 200  # and the app keeps serving
    assert response.status_code == 500
    assert response.text == "Internal Server Error"


def test_404_and_405(client: TestClient) -> None:
    missing = client.get("/does-not-exist")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}
    wrong = client.post("/")
    assert wrong.status_code == 405
    assert wrong.json() == {"detail": "Method Not Allowed"}
    assert wrong.headers["allow"] == "GET"


def test_binary_html_and_text_bodies(client: TestClient) -> None:
    binary = client.get("/bytes")
    assert binary.content == bytes(range(256))
    assert binary.headers["content-type"] == "application/octet-stream"
    html = client.get("/html")
    assert html.text == "<h1>hi</h1>"
    assert html.headers["content-type"].startswith("text/html")


def test_large_request_body_round_trips(client: TestClient) -> None:
    body = os.urandom(1024 * 1024)
    response = client.post("/echo", content=body)
    assert response.status_code == 200
    assert response.content == body


def test_router_prefix_and_mounted_app(client: TestClient) -> None:
    assert client.get("/api/v1/users/9").json() == {"user_id": 9}
    assert client.get("/api/v1/users/x").status_code == 422
    assert client.get("/sub/").text == "sub /sub"


def test_openapi_and_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/", "/items", "/items/{item_id}", "/api/v1/users/{user_id}", "/search"} <= set(schema["paths"])
    assert len(schema["paths"]) >= 25
    assert "swagger-ui" in client.get("/docs").text


def test_lifespan_runs_once_with_state(app: FastAPI) -> None:
    with TestClient(app) as client:
        assert client.get("/lifespan-state").json() == {"greeting": "hello from lifespan"}
        assert app.state.events == ["startup"]
    assert app.state.events == ["startup", "shutdown"]


LIFECYCLE = """
import asyncio, gc, json, os, sys, tempfile, time, traceback
from pathlib import Path

sys.path[:0] = [sys.argv[2], str(Path(sys.argv[2]) / "http")]
from test_transparency import TestClient, make_app

def threads():
    return len(os.listdir("/proc/self/task"))

def open_loops():
    return sum(isinstance(o, asyncio.AbstractEventLoop) and not o.is_closed() for o in gc.get_objects())

app = make_app(sys.argv[1] == "True", Path(tempfile.mkdtemp()))
before, loops_before = threads(), open_loops()
with TestClient(app) as client:
    for path in ("/", "/sync", "/stream", "/file"):
        assert client.get(path).status_code == 200
    assert client.post("/background").status_code == 200
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"n": 2})
        assert ws.receive_json() == {"echo": {"n": 2}}
deadline = time.monotonic() + 3
while threads() > before and time.monotonic() < deadline:
    time.sleep(0.02)
gc.collect()
me = sys._current_frames().keys() - {__import__("threading").main_thread().ident}
left = ["".join(traceback.format_stack(frame)[-3:]) for tid, frame in sys._current_frames().items() if tid in me]
print(json.dumps({"before": before, "after": threads(), "loops": open_loops() - loops_before, "left": left}))
"""


def test_nothing_is_left_running(wrapped: bool) -> None:
    # In a fresh interpreter (with every warning an error), so that what an earlier test started
    # cannot hide what this app leaves behind: threads (raw ones too: /proc counts them all),
    # event loops, and anything that warns when collected (unclosed sockets, files, loops).
    tests = Path(__file__).parent.parent  # (where the shared helpers are)
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", LIFECYCLE, str(wrapped), str(tests)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tests,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # "Exception ignored in ..." is how a ResourceWarning in __del__ surfaces
    report = json.loads(result.stdout)
    assert report["loops"] <= 0
    assert report["after"] <= report["before"], "threads still running after shutdown:\n" + "\n".join(report["left"])
