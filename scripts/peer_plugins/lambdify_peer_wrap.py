"""Loaded with `-p` into the wrapped run of a peer suite: every app of the framework under test is served
through lambdify's middleware, as a user would wrap it.

- `LAMBDIFY_PEER_TARGET=flask`: each `Flask(...)` gets `app.wsgi_app = WSGIMiddleware(app.wsgi_app)`
  (the form lambdify's README shows for Flask) the first time the app is called.
- `LAMBDIFY_PEER_TARGET=fastapi`: each `FastAPI` app is served as `ASGIMiddleware(app)` - the whole app,
  lifespan included - built the first time the app is called.

The middleware classes are thin subclasses that count what passes through them: a request is *served*
when lambdify put its LambdaContext into the environ/scope, i.e. it really became an invocation. The
counts are printed at the end of the session and written as JSON to `$LAMBDIFY_PEER_COUNTS`, so that a
run in which the patch silently did nothing cannot pass for a transparent one.
"""

from __future__ import annotations

import functools
import json
import os
import types
from collections.abc import Callable, Iterable
from typing import Any

import pytest

import lambdify

CONTEXT_KEY = "lambdify.context"
counts = {"apps": 0, "entered": 0, "served": 0}
_restore: list[Callable[[], None]] = []


class CountingWSGIMiddleware(lambdify.WSGIMiddleware):
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        counts["entered"] += 1
        try:
            return super().__call__(environ, start_response)
        finally:
            if CONTEXT_KEY in environ:
                counts["served"] += 1


class CountingASGIMiddleware(lambdify.ASGIMiddleware):
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        http = scope["type"] == "http"
        counts["entered"] += http
        try:
            await super().__call__(scope, receive, send)
        finally:
            if http and CONTEXT_KEY in scope:
                counts["served"] += 1


def _patch(owner: type, name: str, replacement: Any) -> None:
    original = owner.__dict__[name]
    setattr(owner, name, replacement)
    _restore.append(lambda: setattr(owner, name, original))


def _wrap_flask() -> None:
    # At the app's first request rather than in its __init__: `app.wsgi_app = X(app.wsgi_app)` makes a
    # reference cycle (app -> middleware -> bound method -> app) with any middleware X, a pass-through
    # one included, and Flask's test_app_freed_on_zero_refcount frees an app that served nothing with
    # the cyclic GC off. Every request is still served through lambdify.
    from flask import Flask

    original_call = Flask.__call__

    @functools.wraps(original_call)
    def __call__(self: Flask, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not isinstance(self.__dict__.get("wsgi_app"), CountingWSGIMiddleware):
            self.wsgi_app = CountingWSGIMiddleware(self.wsgi_app)  # type: ignore[method-assign]
            counts["apps"] += 1
        return original_call(self, environ, start_response)

    _patch(Flask, "__call__", __call__)


def _wrap_fastapi() -> None:
    from fastapi import FastAPI

    original_call = FastAPI.__call__
    key = "_lambdify_peer_middleware"

    @functools.wraps(original_call)
    async def __call__(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        middleware = self.__dict__.get(key)
        if middleware is None:
            middleware = self.__dict__[key] = CountingASGIMiddleware(types.MethodType(original_call, self))
            counts["apps"] += 1
        await middleware(scope, receive, send)

    _patch(FastAPI, "__call__", __call__)


_TARGETS = {"flask": _wrap_flask, "fastapi": _wrap_fastapi}


def pytest_configure(config: pytest.Config) -> None:
    target = os.environ.get("LAMBDIFY_PEER_TARGET", "")
    if target not in _TARGETS:
        raise pytest.UsageError(f"LAMBDIFY_PEER_TARGET must be one of {sorted(_TARGETS)}, not {target!r}")
    if not _restore:
        _TARGETS[target]()


def pytest_unconfigure(config: pytest.Config) -> None:
    while _restore:
        _restore.pop()()
    path = os.environ.get("LAMBDIFY_PEER_COUNTS")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump({**counts, "lambdify": os.path.dirname(lambdify.__file__ or "")}, out)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        f"lambdify peer wrap: {counts['served']} requests served through lambdify "
        f"({counts['entered']} entered the middleware, {counts['apps']} apps wrapped; "
        f"lambdify from {os.path.dirname(lambdify.__file__ or '')})"
    )
