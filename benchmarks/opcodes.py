"""Bytecodes per HTTP request, counted with a tracer: a deterministic measure of how much Python
each request runs, by file and function (times drift with the machine; these do not).

    python benchmarks/opcodes.py [bare|wrapped|fn] [--top 25]

Each app is called in-process under uvloop as a server would call it (a 3-header GET), 200
times to warm up, then 1,000 times traced. `bare` is a Starlette route returning
`PlainTextResponse("hello")`, `wrapped` the same app with `ASGIMiddleware`, `fn` is `fn.asgi` of
an async hello handler.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lambdify import ASGIMiddleware, handler

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 8000),
}


async def hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse("hello")


@handler(name="hello")
async def hello_fn(event: Any, context: Any) -> Any:
    return {"statusCode": 200, "body": "hello"}


def make(name: str) -> Any:
    app = Starlette(routes=[Route("/", hello)])
    if name == "wrapped":
        app.add_middleware(ASGIMiddleware)
    return hello_fn.asgi if name == "fn" else app


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("app", choices=["bare", "wrapped", "fn"])
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    app = make(args.app)
    counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
            return tracer
        if event == "opcode":
            code = frame.f_code
            counts[(code.co_filename.split("site-packages/")[-1], code.co_name)] += 1
        return tracer

    async def run(n: int, traced: bool) -> None:
        if traced:
            sys.settrace(tracer)
        for _ in range(n):
            await app(dict(SCOPE), receive, send)
        sys.settrace(None)

    import uvloop

    uvloop.run(run(200, False))
    uvloop.run(run(1000, True))
    print(f"# python benchmarks/opcodes.py {args.app}")
    print(f"bytecodes per request: {sum(counts.values()) / 1000:.1f}")
    by_file: collections.Counter[str] = collections.Counter()
    for (file, _), n in counts.items():
        by_file[file] += n
    for file, n in by_file.most_common(args.top):
        print(f"{n / 1000:8.1f}  {file}")
    print()
    for (file, function), n in counts.most_common(args.top):
        print(f"{n / 1000:8.1f}  {file} {function}")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
