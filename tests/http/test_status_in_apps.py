"""The status endpoints inside a user's app (DESIGN §10): opt-in with `status_path`, off by default."""

from __future__ import annotations

import httpx
import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lambdify import ASGIMiddleware, WSGIMiddleware


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


def _starlette(**options: object) -> Starlette:
    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(ASGIMiddleware, name="wrapped_asgi", **options)
    return app


@pytest.mark.anyio
async def test_asgi_middleware_serves_the_status_endpoints_when_asked() -> None:
    transport = httpx.ASGITransport(app=_starlette(status_path="/_lambdify"))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for _ in range(3):
            assert (await client.get("/")).text == "hello"
        stats = (await client.get("/_lambdify/stats.json")).json()
        assert stats["functions"]["wrapped_asgi"]["invocations"] == 3  # the status requests are not invocations
        page = await client.get("/_lambdify/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "stats.json" in page.text  # the page polls it
        metrics = await client.get("/_lambdify/metrics")
        assert 'function="wrapped_asgi"' in metrics.text
        redirect = await client.get("/_lambdify")
        assert redirect.status_code == 307 and redirect.headers["location"] == "/_lambdify/"


@pytest.mark.anyio
async def test_asgi_middleware_leaves_the_path_to_the_app_by_default() -> None:
    transport = httpx.ASGITransport(app=_starlette())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/_lambdify/stats.json")).status_code == 404  # the app's own 404


def _flask(**options: object) -> tuple[Flask, WSGIMiddleware]:
    app = Flask("status_in_flask")

    @app.get("/")
    def index() -> str:
        return "hello"

    middleware = WSGIMiddleware(app.wsgi_app, name="wrapped_wsgi", **options)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    return app, middleware


def test_wsgi_middleware_serves_the_status_endpoints_when_asked() -> None:
    app, _ = _flask(status_path="/ops/")
    with app.test_client() as client:
        for _ in range(2):
            assert client.get("/").data == b"hello"
        stats = client.get("/ops/stats.json").get_json()
        assert stats["functions"]["wrapped_wsgi"]["invocations"] == 2
        assert client.get("/ops/metrics").status_code == 200
        assert client.post("/ops/stats.json").status_code == 405
        assert client.get("/ops/nothing").status_code == 404


def test_wsgi_middleware_leaves_the_path_to_the_app_by_default() -> None:
    app, middleware = _flask()
    assert type(middleware) is WSGIMiddleware
    with app.test_client() as client:
        assert client.get("/_lambdify/stats.json").status_code == 404


@pytest.mark.parametrize("bad", ["", "/", "ops", 3])
def test_a_bad_status_path_is_refused_naming_the_option(bad: object) -> None:
    with pytest.raises(ValueError, match="status_path"):
        ASGIMiddleware(Starlette(), status_path=bad)
    with pytest.raises(ValueError, match="status_path"):
        WSGIMiddleware(Flask("x"), status_path=bad)


@pytest.mark.anyio
async def test_status_endpoints_below_a_mount_point() -> None:
    # Mounted (Starlette puts the mount in both `root_path` and `path`): `status_path` is the
    # wrapped app's own, and the redirect names the mount once.
    from starlette.routing import Mount

    from lambdify import FunctionApp, handler

    @handler(name="mounted_fn")
    def fn(event: object, context: object) -> str:
        return "fn"

    functions = FunctionApp([fn], status=True)
    sub = Starlette(routes=[Route("/", hello)])
    sub.add_middleware(ASGIMiddleware, name="mounted_asgi", status_path="/_lambdify")
    app = Starlette(routes=[Mount("/fns", functions), Mount("/sub", sub)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/sub/")).text == "hello"
        assert (await client.get("/sub/_lambdify/stats.json")).json()["functions"]["mounted_asgi"]["invocations"] == 1
        assert (await client.get("/sub/_lambdify/")).status_code == 200
        redirect = await client.get("/fns/_lambdify")
        assert redirect.status_code == 307 and redirect.headers["location"] == "/fns/_lambdify/"
        assert (await client.get("/fns/_lambdify/", follow_redirects=True)).status_code == 200
    fn.shutdown()


def test_a_function_the_status_page_would_hide_is_refused() -> None:
    from lambdify import FunctionApp, handler

    @handler(name="_lambdify")
    def fn(event: object, context: object) -> str:
        return "hidden"

    with pytest.raises(ValueError, match="hidden by the status page"):
        FunctionApp([fn], status=True)
    FunctionApp([fn])  # (no status page: nothing to hide it)
