"""Wrapping copies nothing of the wrapped object (DESIGN.md §5): Flask, FastAPI, Starlette,
Django-style objects and bound methods keep their attributes to themselves, at `.app`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.test import Client

from lambdify import ASGIMiddleware, WSGIMiddleware, handler
from lambdify.core.config import Config
from lambdify.core.engine import Engine


class DjangoStyle:
    """Like Django's WSGIHandler: an object with state of its own, some named like ours."""

    def __init__(self) -> None:
        self.config = {"DEBUG": False}
        self.function = "not yours"
        self.name = "django"
        self.request_class = object

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"django " + str(self.config["DEBUG"]).encode()]


class Service:
    def __init__(self) -> None:
        self.config = "the service's"

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"bound " + self.config.encode()]


def _flask() -> Flask:
    app = Flask(__name__)
    app.config["X"] = 1

    @app.get("/")
    def index() -> str:
        return "flask"

    return app


WSGI_APPS = [
    pytest.param(_flask, b"flask", id="flask-object"),
    pytest.param(lambda: _flask().wsgi_app, b"flask", id="flask-wsgi_app"),
    pytest.param(DjangoStyle, b"django False", id="django-style"),
    pytest.param(lambda: Service().wsgi, b"bound the service's", id="bound-method"),
]


def _assert_nothing_copied(middleware: Any, app: Any) -> None:
    assert middleware.app is app
    assert isinstance(middleware.function, Engine)
    assert isinstance(middleware.function.config, Config)
    own, theirs = vars(middleware.function), getattr(app, "__dict__", {})
    copied = [name for name in own if name in theirs and own[name] is theirs[name]]
    assert not copied, copied
    assert "__wrapped__" not in vars(middleware.function)
    assert not hasattr(middleware, "__wrapped__")


@pytest.mark.parametrize(("make", "body"), WSGI_APPS)
def test_wsgi_wrapping_copies_nothing(make: Any, body: bytes) -> None:
    app = make()
    middleware = WSGIMiddleware(app)
    _assert_nothing_copied(middleware, app)
    response = Client(middleware).get("/")
    assert response.status_code == 200 and response.data == body
    response.close()
    middleware.function.shutdown()


def _fastapi() -> FastAPI:
    app = FastAPI(title="mine")

    @app.get("/")
    def index() -> str:
        return "fastapi"

    return app


def _starlette() -> Starlette:
    return Starlette(routes=[Route("/", lambda request: PlainTextResponse('"starlette"'))])


class AsgiService:
    def __init__(self) -> None:
        self.config = "the service's"

    async def asgi(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'"bound"'})


ASGI_APPS = [
    pytest.param(_fastapi, '"fastapi"', id="fastapi"),
    pytest.param(_starlette, '"starlette"', id="starlette"),
    pytest.param(lambda: AsgiService().asgi, '"bound"', id="bound-method"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("make", "body"), ASGI_APPS)
async def test_asgi_wrapping_copies_nothing(make: Any, body: str) -> None:
    app = make()
    middleware = ASGIMiddleware(app)
    _assert_nothing_copied(middleware, app)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")
    assert response.status_code == 200 and response.text == body
    await middleware.function.ashutdown()


def test_a_decorated_function_keeps_its_identity_and_nothing_else() -> None:
    def greet(event: Any, context: Any) -> str:
        """Say hello."""
        return "hello"

    greet.config = "the function's"  # type: ignore[attr-defined]
    fn = handler(greet)
    assert fn.__name__ == "greet" and fn.__doc__ == "Say hello." and fn.__wrapped__ is greet  # type: ignore[attr-defined]
    assert fn.__module__ == __name__ and fn.__qualname__ == greet.__qualname__  # type: ignore[attr-defined]
    assert isinstance(fn.config, Config) and fn.config.name == "greet"
    assert fn.invoke({}) == "hello"


def test_a_lambda_needs_a_name_and_is_told_so() -> None:
    with pytest.raises(ValueError, match=r"pass name=") as raised:
        handler(lambda event, context: 1)
    assert "<lambda>" in str(raised.value)
    assert handler(name="one")(lambda event, context: 1).invoke({}) == 1
