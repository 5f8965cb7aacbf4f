"""Where the time of an HTTP request goes inside lambdify, without a server or a socket: each app is
called in a loop (ASGI: `await app(scope, receive, send)`; WSGI: `app(environ, start_response)`
then iterate and `close()` the body), one request at a time, on one thread/loop.

    python benchmarks/http_overhead.py [--rounds 15] [--n 2000] [--profile] [--top 25]

Reports µs per request (median and min over rounds, variants interleaved) for:
  bare Starlette route / fn.asgi (async handler) / fn.asgi (sync handler) / bare Starlette sync route /
  Starlette + ASGIMiddleware / Starlette + BaseHTTPMiddleware / Starlette + no-op ASGI middleware /
  Invoke API (FunctionApp) POST / bare Starlette POST json route /
  bare Flask / Flask + WSGIMiddleware
and the difference to the matching bare app, i.e. lambdify's own cost per request.

With `--profile`, each lambdify variant is also run under cProfile and the lambdify functions
with the most own time are listed with µs per request (tottime / requests; cProfile inflates
every number several-fold, so read them as shares, not as absolute costs). The in-process
numbers leave out what a server adds (parsing, sockets, its own tasks), which is why the
percentages here are larger than the ratios the load benchmarks (`../shared/bench/run`) see.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _load import describe_lambdify, lambdify_source
from _timing import print_header

from lambdify import ASGIMiddleware, FunctionApp, WSGIMiddleware, handler

INVOKE_PATH = "/2015-03-31/functions/hello/invocations"
PAYLOAD = b'{"name": "bench"}'
HEADERS = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]


# -- the apps -------------------------------------------------------------------------------


def build_apps() -> dict[str, Any]:
    from flask import Flask
    from starlette.applications import Starlette
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello")

    def hello_sync(request: Request) -> Response:
        return PlainTextResponse("hello")

    async def invoke(request: Request) -> Response:
        await request.json()
        return JSONResponse({"statusCode": 200, "body": "hello"})

    def starlette() -> Starlette:
        return Starlette(routes=[Route("/", hello)])

    async def passthrough(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        return response

    class NoOp:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    @handler(name="hello")
    async def ahello(event: Any, context: Any) -> Any:
        return {"statusCode": 200, "body": "hello"}

    @handler(name="hello_sync")
    def shello(event: Any, context: Any) -> Any:
        return {"statusCode": 200, "body": "hello"}

    @handler(name="hello")
    async def ihello(event: Any, context: Any) -> Any:
        return {"statusCode": 200, "body": "hello"}

    wrapped, basehttp, noop = starlette(), starlette(), starlette()
    wrapped.add_middleware(ASGIMiddleware)
    basehttp.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)
    noop.add_middleware(NoOp)

    def flask() -> Flask:
        app = Flask("bench")
        app.add_url_rule("/", "hello", lambda: "hello")
        return app

    flask_wrapped = flask()
    flask_wrapped.wsgi_app = WSGIMiddleware(flask_wrapped.wsgi_app)  # type: ignore[method-assign]
    return {
        "bare Starlette route": starlette(),
        "fn.asgi async handler": ahello.asgi,
        "fn.asgi sync handler": shello.asgi,
        "bare Starlette sync route": Starlette(routes=[Route("/", hello_sync)]),
        "Starlette + ASGIMiddleware": wrapped,
        "Starlette + BaseHTTPMiddleware": basehttp,
        "Starlette + no-op ASGI middleware": noop,
        "Invoke API POST (FunctionApp)": FunctionApp([ihello]),
        "bare Starlette POST json route": Starlette(routes=[Route(INVOKE_PATH, invoke, methods=["POST"])]),
        "bare Flask (WSGI)": flask(),
        "Flask + WSGIMiddleware": flask_wrapped,
        "_functions": [ahello, shello, ihello, wrapped, flask_wrapped],
    }


# -- drivers --------------------------------------------------------------------------------


def asgi_loop(app: Any, post: bool) -> Callable[[int], Awaitable[float]]:
    body = PAYLOAD if post else b""
    extra = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))] if post else []
    headers = HEADERS + extra
    path = INVOKE_PATH if post else "/"
    base = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "POST" if post else "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "state": {},
    }  # fmt: skip
    request = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def run(n: int) -> float:
        statuses.clear()
        start = time.perf_counter()
        for _ in range(n):
            await app({**base, "headers": list(headers)}, receive, send)
        took = time.perf_counter() - start
        if statuses.count(200) != n:
            raise RuntimeError(f"unexpected statuses: {set(statuses)}")
        return took

    return run


def wsgi_loop(app: Any) -> Callable[[int], Awaitable[float]]:
    import sys

    base = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "", "RAW_URI": "/",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000", "HTTP_USER_AGENT": "wrk", "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": False,
        "wsgi.multiprocess": False, "wsgi.run_once": False,
    }  # fmt: skip
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return None

    async def run(n: int) -> float:  # sync inside; async only to share the interleaving driver
        statuses.clear()
        start = time.perf_counter()
        for _ in range(n):
            environ = dict(base)
            environ["wsgi.input"] = io.BytesIO(b"")
            body = app(environ, start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        took = time.perf_counter() - start
        if sum(s.startswith("200") for s in statuses) != n:
            raise RuntimeError(f"unexpected statuses: {set(statuses)}")
        return took

    return run


# -- the pieces of one ASGIMiddleware request, each timed alone -----------------------------


async def pieces(rounds: int, n: int) -> list[tuple[str, float]]:
    """µs per call of each step `ASGIMiddleware._http` takes for a request (lambdify internals:
    this section follows lambdify/asgi.py and may need updating when that changes)."""
    from lambdify.core.current import _current, new_request_id
    from lambdify.core.invocation import _Invocation

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    middleware = ASGIMiddleware(app)
    function = middleware.function
    loop = asyncio.get_running_loop()
    pool = function.pool(loop)
    ctx, _ = await pool.aacquire()
    pool.release(ctx)

    async def acquire_release(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            c, _cold = await pool.aacquire()
            pool.release(c)
        return time.perf_counter() - start

    async def take_release(k: int) -> float:  # the hot path, in versions that have Pool.take()
        start = time.perf_counter()
        for _ in range(k):
            c = pool.take()
            pool.release(c)
        return time.perf_counter() - start

    class _Item:  # what a DeadlineWatch holds: something to expire()
        def expire(self) -> None:
            return None

    async def watch_add_discard(k: int) -> float:  # the pool's DeadlineWatch
        watch = pool.watch
        start = time.perf_counter()
        for _ in range(k):
            item = _Item()
            watch.add(item, time.monotonic() + 30.0)
            watch.discard(item)
        return time.perf_counter() - start

    async def invocation_new(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            _Invocation(function, ctx, "00000000-0000-4000-8000-000000000000", False, None)
        return time.perf_counter() - start

    async def invocation_finish(k: int) -> float:
        invocations = [_Invocation(function, ctx, "x", False, None) for _ in range(k)]
        for _ in range(k):
            ctx.active += 1  # finish() releases the context once per invocation
        start = time.perf_counter()
        for invocation in invocations:
            invocation.finish(pool, None, None)
        return time.perf_counter() - start

    async def request_id(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            new_request_id()
        return time.perf_counter() - start

    def _noop(*args: Any) -> None:
        return None

    async def timer(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            loop.call_at(loop.time() + 30.0, _noop, None, None, None, None).cancel()
        return time.perf_counter() - start

    async def current_task(k: int) -> float:
        get_task = pool.current_task  # asyncio.current_task, or the dict lookup inside it before 3.12
        start = time.perf_counter()
        for _ in range(k):
            get_task(loop)
        return time.perf_counter() - start

    async def get_loop(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            asyncio.get_running_loop()
        return time.perf_counter() - start

    async def context_var(k: int) -> float:
        lc = object()
        start = time.perf_counter()
        for _ in range(k):
            _current.reset(_current.set(lc))  # type: ignore[arg-type]
        return time.perf_counter() - start

    async def wrapper_layer(k: int) -> float:  # the extra await of a send wrapper like send_wrapper
        async def send(message: Any) -> None:
            return None

        async def send_wrapper(message: Any) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                pass
            await send(message)

        message = {"type": "http.response.body", "body": b"hello"}
        start = time.perf_counter()
        for _ in range(k):
            await send_wrapper(message)
        return time.perf_counter() - start

    def requests_to(target: Any) -> Callable[[int], Awaitable[float]]:
        """`k` minimal GET requests to the ASGI app `target`, timed."""

        async def timed(k: int) -> float:
            scope = {"type": "http", "method": "GET", "path": "/", "headers": []}

            async def receive() -> Any:
                return {"type": "http.request"}

            async def send(message: Any) -> None:
                return None

            start = time.perf_counter()
            for _ in range(k):
                await target(dict(scope), receive, send)
            return time.perf_counter() - start

        return timed

    whole, bare_call = requests_to(middleware), requests_to(app)

    steps: list[tuple[str, Callable[[int], Awaitable[float]]]] = [
        ("whole: ASGIMiddleware(app) around a no-op app", whole),
        ("  the no-op app called bare (subtract)", bare_call),
        ("pool.aacquire() + pool.release()", acquire_release),
        ("pool.take() + pool.release()", take_release),
        ("pool.watch.add() + .discard()", watch_add_discard),
        ("_Invocation(...) (with its LambdaContext)", invocation_new),
        ("_Invocation.finish() (incl. pool.release)", invocation_finish),
        ("new_request_id()", request_id),
        ("loop.call_at(...) + TimerHandle.cancel()", timer),
        ("pool.current_task(loop)", current_task),
        ("asyncio.get_running_loop()", get_loop),
        ("ContextVar set + reset", context_var),
        ("one send-wrapper layer (an extra await)", wrapper_layer),
    ]
    results = []
    for label, body in steps:
        try:
            await body(max(10, n // 10))
        except (AttributeError, ImportError) as exc:  # a step this version of lambdify does not have
            print(f"# skipped {label!r}: {type(exc).__name__}: {exc}")
            continue
        per = []
        for _ in range(rounds):
            per.append(await body(n) / n * 1e6)
        results.append((label, statistics.median(per)))
    await function.ashutdown()
    return results


async def fn_pieces(rounds: int, n: int) -> list[tuple[str, float]]:
    """µs per call of the steps `fn.asgi` takes for a request (public codecs and `ainvoke`)."""
    from lambdify.core.current import new_request_id
    from lambdify.core.payload import ensure_json
    from lambdify.http.events import request_event, response_from_result

    @handler(name="hello")
    async def hello(event: Any, context: Any) -> Any:
        return {"statusCode": 200, "body": "hello"}

    result = {"statusCode": 200, "body": "hello"}
    event = request_event(
        "v2", method="GET", raw_path="/", query_string=b"", headers=HEADERS, body=b"",
        source_ip="127.0.0.1", protocol="HTTP/1.1", request_id=new_request_id(), function_name="hello",
    )  # fmt: skip

    def timed(fn: Callable[[], Any]) -> Callable[[int], Awaitable[float]]:
        async def run(k: int) -> float:
            start = time.perf_counter()
            for _ in range(k):
                fn()
            return time.perf_counter() - start

        return run

    async def ainvoke(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            await hello.ainvoke(event)
        return time.perf_counter() - start

    async def timeout_block(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            async with asyncio.timeout(30.0):  # noqa: ASYNC100 - the cost of arming and disarming it
                pass
        return time.perf_counter() - start

    steps: list[tuple[str, Callable[[int], Awaitable[float]]]] = [
        ("whole: fn.asgi (see the table above)", asgi_loop(hello.asgi, post=False)),
        ("await fn.ainvoke(event) (the invocation alone)", ainvoke),
        (
            "request_event('v2', ...) (3 headers)",
            timed(
                lambda: request_event(
                    "v2",
                    method="GET",
                    raw_path="/",
                    query_string=b"",
                    headers=HEADERS,
                    body=b"",
                    source_ip="127.0.0.1",
                    protocol="HTTP/1.1",
                    request_id="x",
                    function_name="hello",
                )  # fmt: skip
            ),
        ),
        ("response_from_result('v2', result)", timed(lambda: response_from_result("v2", result))),
        ("ensure_json(result)", timed(lambda: ensure_json(result))),
        ("ensure_json(event) (the v2 event, if it were checked)", timed(lambda: ensure_json(event))),
        ("async with asyncio.timeout(30)", timeout_block),
    ]
    results = []
    for label, body in steps:
        await body(max(10, n // 10))
        results.append((label, statistics.median([await body(n) / n * 1e6 for _ in range(rounds)])))
    await hello.ashutdown()
    return results


def wsgi_pieces(rounds: int, n: int) -> list[tuple[str, float]]:
    """µs per call of the steps `WSGIMiddleware.__call__` takes for a request (lambdify internals)."""
    from lambdify.core.invoke_sync import SyncRun
    from lambdify.isolation.thread import Worker

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    middleware = WSGIMiddleware(app)
    function = middleware.function
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": io.BytesIO(b"")}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        return None

    def whole(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            body = middleware(dict(environ), start_response)
            for _chunk in body:
                pass
            body.close()  # type: ignore[attr-defined]
        return time.perf_counter() - start

    def bare(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            app(dict(environ), start_response)
        return time.perf_counter() - start

    def sync_run(k: int) -> float:  # what __call__ does minus the response plumbing
        start = time.perf_counter()
        for _ in range(k):
            run = SyncRun(function, dict(environ), "x", target=middleware._run_app)
            run.ready()
            run.complete()
        return time.perf_counter() - start

    pool = function.pool(None)

    def acquire_release(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            ctx, _cold = pool.acquire()
            pool.release(ctx)
        return time.perf_counter() - start

    worker = Worker("bench")

    def _noop() -> None:
        return None

    def hop(k: int) -> float:  # the floor: a no-op on another thread and back
        start = time.perf_counter()
        for _ in range(k):
            worker.call(_noop, timeout=30.0)
        return time.perf_counter() - start

    steps = [
        ("whole: WSGIMiddleware(app) around a minimal WSGI app", whole),
        ("  the app called bare (subtract)", bare),
        ("SyncRun(...) + ready() + complete() (the invocation, incl. the thread hop)", sync_run),
        ("  of which pool.acquire() + pool.release()", acquire_release),
        ("  of which the thread hop: Worker.call(no-op) round trip", hop),
    ]
    results = []
    try:
        for label, body in steps:
            body(max(10, n // 10))
            results.append((label, statistics.median(body(n) / n * 1e6 for _ in range(rounds))))
    finally:
        worker.stop()
        function.shutdown()
    return results


def task_creation(rounds: int, n: int) -> list[tuple[str, float]]:
    """µs per `loop.create_task` without and with lambdify's task factory (installed on the loop of
    any pool, so every task the server creates, e.g. one per request, goes through it)."""
    from lambdify.core.background import install_task_factory

    async def nothing() -> None:
        return None

    def run(factory: bool, k: int) -> float:
        loop = asyncio.new_event_loop()
        if factory:
            install_task_factory(loop)
        coros = [nothing() for _ in range(k)]
        start = time.perf_counter()
        tasks = [loop.create_task(coro) for coro in coros]
        took = time.perf_counter() - start
        loop.run_until_complete(asyncio.gather(*tasks))
        loop.close()
        return took

    results = []
    for label, factory in (("loop.create_task, no task factory", False), ("  ... with lambdify's task factory", True)):
        run(factory, n)
        results.append((label, statistics.median(run(factory, n) / n * 1e6 for _ in range(rounds))))
    return results


# -- main -----------------------------------------------------------------------------------

PAIRS = [  # (lambdify variant, its bare baseline)
    ("fn.asgi async handler", "bare Starlette route"),
    ("fn.asgi sync handler", "bare Starlette route"),
    ("fn.asgi sync handler", "bare Starlette sync route"),
    ("bare Starlette sync route", "bare Starlette route"),
    ("Starlette + ASGIMiddleware", "bare Starlette route"),
    ("Starlette + BaseHTTPMiddleware", "bare Starlette route"),
    ("Starlette + no-op ASGI middleware", "bare Starlette route"),
    ("Invoke API POST (FunctionApp)", "bare Starlette POST json route"),
    ("Flask + WSGIMiddleware", "bare Flask (WSGI)"),
]
LAMBDIFY = ["fn.asgi async handler", "fn.asgi sync handler", "Starlette + ASGIMiddleware",
            "Invoke API POST (FunctionApp)", "Flask + WSGIMiddleware"]  # fmt: skip


def drivers(apps: dict[str, Any]) -> dict[str, Callable[[int], Awaitable[float]]]:
    out = {}
    for label, app in apps.items():
        if label.startswith("_"):
            continue
        if "Flask" in label:
            out[label] = wsgi_loop(app)
        else:
            out[label] = asgi_loop(app, post="POST" in label)
    return out


async def measure(runs: dict[str, Callable[[int], Awaitable[float]]], n: int, rounds: int) -> dict[str, list[float]]:
    for run in runs.values():
        await run(max(50, n // 10))
    per: dict[str, list[float]] = {label: [] for label in runs}
    for r in range(rounds):
        order = list(runs.items()) if r % 2 == 0 else list(reversed(runs.items()))
        for label, run in order:
            gc.collect()
            per[label].append(await run(n) / n * 1e6)
    return per


async def profile(runs: dict[str, Callable[[int], Awaitable[float]]], n: int, top: int) -> None:
    for label in LAMBDIFY:
        run = runs[label]
        await run(200)
        profiler = cProfile.Profile()
        profiler.enable()
        await run(n)
        profiler.disable()
        stats = pstats.Stats(profiler)
        rows = []
        for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if "/lambdify/" in filename:
                short = filename.split("/lambdify/", 1)[1]
                rows.append((tottime, cumtime, calls, f"{short}:{line} {name}"))
        rows.sort(reverse=True)
        total = sum(st[2] for st in stats.stats.values())  # type: ignore[attr-defined]
        own = sum(r[0] for r in rows)
        print(f"## cProfile: {label} ({n} requests; all code {total / n * 1e6:.1f} µs/req under the profiler,")
        print(f"##   of which own time in lambdify functions {own / n * 1e6:.1f} µs/req)")
        print(f"| {'lambdify function':<62} | calls/req | own µs/req | cum µs/req |")
        print(f"|{'-' * 64}|----------:|-----------:|-----------:|")
        for tottime, cumtime, calls, where in rows[:top]:
            print(f"| {where[:62]:<62} | {calls / n:9.2f} | {tottime / n * 1e6:10.2f} | {cumtime / n * 1e6:10.2f} |")
        print()


async def profile_all(args: argparse.Namespace) -> None:
    apps = build_apps()
    try:
        await profile(drivers(apps), args.n, args.top)
    finally:
        await close_apps(apps)


async def amain(args: argparse.Namespace) -> None:
    apps = build_apps()
    runs = drivers(apps)
    try:
        per = await measure(runs, args.n, args.rounds)
        width = max(map(len, per))
        print(f"| {'variant':<{width}} | median µs/req | min µs/req |")
        print(f"|{'-' * (width + 2)}|--------------:|-----------:|")
        for label, xs in per.items():
            print(f"| {label:<{width}} | {statistics.median(xs):13.1f} | {min(xs):10.1f} |")
        print()
        print(f"| {'added per request':<{width + 27}} | median µs | min µs | ratio of medians |")
        print(f"|{'-' * (width + 29)}|----------:|-------:|-----------------:|")
        for variant, base in PAIRS:
            a, b = statistics.median(per[variant]), statistics.median(per[base])
            label = f"{variant} - {base}"
            added_min = min(per[variant]) - min(per[base])
            print(f"| {label:<{width + 27}} | {a - b:9.1f} | {added_min:6.1f} | {a / b:15.2f}x |")
        print()
        print("## the steps of one ASGIMiddleware request, each timed alone (µs per call, median)")
        print("| step | µs |")
        print("|------|---:|")
        for label, us in await pieces(args.rounds, args.n):
            print(f"| {label} | {us:.2f} |")
        print()
        print("## the steps of one fn.asgi request (async handler), each timed alone (µs per call, median)")
        print("| step | µs |")
        print("|------|---:|")
        for label, us in await fn_pieces(args.rounds, args.n):
            print(f"| {label} | {us:.2f} |")
        print()
    finally:
        await close_apps(apps)


async def close_apps(apps: dict[str, Any]) -> None:
    """Retire every context the apps created (threads included)."""
    for thing in apps["_functions"]:
        function = getattr(thing, "function", thing)
        if hasattr(function, "ashutdown"):
            await function.ashutdown()
    middleware = apps["Starlette + ASGIMiddleware"].middleware_stack
    while middleware is not None and not isinstance(middleware, ASGIMiddleware):
        middleware = getattr(middleware, "app", None)
    if middleware is not None:
        await middleware.function.ashutdown()
    apps["Flask + WSGIMiddleware"].wsgi_app.function.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=2000, help="requests per round per variant")
    parser.add_argument("--profile", action="store_true", help="also cProfile each lambdify variant")
    parser.add_argument("--top", type=int, default=25, help="rows per profile")
    args = parser.parse_args()
    print_header("lambdify's own cost per HTTP request, in-process (no server, no sockets), µs per request")
    print(f"# lambdify: {lambdify_source()} ({describe_lambdify(lambdify_source())})")
    print()
    started = time.perf_counter()
    asyncio.run(amain(args))
    print("## task creation (every task the server creates on a loop with a lambdify pool), µs per task")
    print("| step | µs |")
    print("|------|---:|")
    for label, us in task_creation(args.rounds, args.n):
        print(f"| {label} | {us:.2f} |")
    print()
    print("## the steps of one WSGIMiddleware request, each timed alone (µs per call, median)")
    print("| step | µs |")
    print("|------|---:|")
    for label, us in wsgi_pieces(args.rounds, args.n):
        print(f"| {label} | {us:.2f} |")
    print()
    if args.profile:
        asyncio.run(profile_all(args))
    print(f"# total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
