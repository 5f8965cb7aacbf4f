"""Serving functions over HTTP: `fn.asgi` and the Invoke API under uvicorn, against a bare
Starlette route in the same run.

    python benchmarks/http_serving.py [--rounds 5] [--duration 5] [--warmup 3] [--connections 16]
                              [--uvicorn-args "--http h11 --loop asyncio"] [--extra-path DIR] [--control]

Variants (each its own uvicorn process, one worker, `--log-level warning --no-access-log`,
pinned to CPU 0; wrk pinned to CPU 1):

- bare Starlette: `Route("/", async endpoint)` returning `PlainTextResponse("hello")`   (baseline)
- fn.asgi, async handler: `@handler async def hello(event, context)` returning
  `{"statusCode": 200, "body": "hello"}`                  TARGET: >= 0.85x the bare route's req/s
- fn.asgi, sync handler: the same as a plain `def`       TARGET: >= 0.85x the bare route's req/s
- bare Starlette, sync endpoint (`def`, run in Starlette's thread pool)            (reference)
- Invoke API: `FunctionApp([hello])`, `POST /2015-03-31/functions/hello/invocations` with
  body `{"name": "bench"}` (wrk lua script)     (reported next to the bare GET route, no target)
- bare Starlette POST: the same path, `await request.json()`, `JSONResponse` of the same
  result                                                                              (reference)
- with `--control`: the bare route again, as a separate variant (an A/A noise control)

Medians over the rounds of req/s, p50 and p99 (wrk `--latency`); ratios are of medians, with
the median of per-round ratios beside them. Total run time is bounded by `--budget`.
"""

from __future__ import annotations

import argparse
import shlex
import time

from _load import (
    PYTHON,
    Settings,
    Variant,
    cpu_target,
    measure,
    p99_target,
    post_request,
    print_header,
    print_table,
    print_targets,
    require_wrk,
    rps_target,
    running,
    server_env,
    uvicorn,
)

TARGET = 0.85
INVOKE_PATH = "/2015-03-31/functions/hello/invocations"
PAYLOAD = b'{"name": "bench"}'

FILES = {
    "bench_bare.py": """
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def hello(request):
    return PlainTextResponse("hello")


def hello_sync(request):
    return PlainTextResponse("hello")


async def invoke(request):
    event = await request.json()
    return JSONResponse({"statusCode": 200, "body": "hello"})


app = Starlette(routes=[Route("/", hello)])
app_sync = Starlette(routes=[Route("/", hello_sync)])
app_post = Starlette(routes=[Route("{INVOKE_PATH}", invoke, methods=["POST"])])
""".replace("{INVOKE_PATH}", INVOKE_PATH),
    "bench_fn_async.py": """
from lambdify import handler


@handler(name="hello")
async def hello(event, context):
    return {"statusCode": 200, "body": "hello"}


app = hello.asgi
""",
    "bench_fn_sync.py": """
from lambdify import handler


@handler(name="hello")
def hello(event, context):
    return {"statusCode": 200, "body": "hello"}


app = hello.asgi
""",
    "bench_invoke.py": """
from lambdify import FunctionApp, handler


@handler(name="hello")
async def hello(event, context):
    return {"statusCode": 200, "body": "hello"}


app = FunctionApp([hello])
""",
}

POST_LUA = f"""wrk.method = "POST"
wrk.body = '{PAYLOAD.decode()}'
wrk.headers["Content-Type"] = "application/json"
"""


def variants(extra: list[str], control: bool) -> list[Variant]:
    post = post_request(INVOKE_PATH, PAYLOAD)
    return [
        *(
            Variant(label, short, uvicorn(target, extra), "/", expect_body=b"hello")
            for label, short, target in (
                ("bare Starlette async route", "bare", "bench_bare:app"),
                ("fn.asgi async handler", "fn-async", "bench_fn_async:app"),
                ("fn.asgi sync handler", "fn-sync", "bench_fn_sync:app"),
                ("bare Starlette sync route", "bare-sync", "bench_bare:app_sync"),
            )
        ),
        Variant(
            "Invoke API POST (FunctionApp)", "invoke", uvicorn("bench_invoke:app", extra), INVOKE_PATH,
            lua=POST_LUA, expect_body=b'"statusCode"', check_request=post,
        ),
        Variant(
            "bare Starlette POST json route", "bare-post", uvicorn("bench_bare:app_post", extra), INVOKE_PATH,
            lua=POST_LUA, expect_body=b'"statusCode"', check_request=post,
        ),
    ] + (
        [Variant("bare route again (A/A)", "bare-again", uvicorn("bench_bare:app", extra), "/", expect_body=b"hello")]
        if control
        else []
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per variant (medians are reported)")
    parser.add_argument("--duration", type=int, default=4, help="seconds of one wrk run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of the warm-up wrk run per variant")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--budget", type=float, default=285.0, help="stop starting rounds past this many seconds")
    parser.add_argument("--quiet", type=float, default=0.3, help="before a round, wait for others' load < this (CPUs)")
    parser.add_argument("--quiet-wait", type=float, default=5.0, help="... for at most this many seconds (0: never)")
    parser.add_argument("--uvicorn-args", default="", help="extra uvicorn options, e.g. '--http httptools'")
    parser.add_argument("--control", action="store_true", help="add the bare route again (an A/A noise control)")
    parser.add_argument("--extra-path", default=None, help="a directory prepended to the servers' PYTHONPATH")
    args = parser.parse_args()
    require_wrk()
    settings = Settings(
        args.rounds,
        args.duration,
        args.warmup,
        args.threads,
        args.connections,
        args.budget,
        args.quiet,
        args.quiet_wait,
    )
    env = server_env(args.extra_path)
    chosen = variants(shlex.split(args.uvicorn_args), args.control)
    print_header("HTTP serving: fn.asgi and the Invoke API vs a bare Starlette route (uvicorn)", settings, chosen)
    started = time.monotonic()
    with running(chosen, env, FILES) as bench:
        print(f"#   stack: {stack(env, args.uvicorn_args)}")
        print()
        servers = bench.slots
        measure(bench, settings)
        print()
        print_table(servers)
        bare, fn_async, fn_sync, bare_sync, invoke, bare_post, *control = servers
        print_targets(
            [
                rps_target("fn.asgi async / bare route, req/s", fn_async, bare, TARGET),
                rps_target("fn.asgi sync / bare route, req/s", fn_sync, bare, TARGET),
                p99_target("fn.asgi async / bare route, p99", fn_async, bare, 0),
                p99_target("fn.asgi sync / bare route, p99", fn_sync, bare, 0),
                cpu_target("fn.asgi async / bare route, by CPU µs/req", fn_async, bare, 0),
                cpu_target("fn.asgi sync / bare route, by CPU µs/req", fn_sync, bare, 0),
                rps_target("fn.asgi sync / bare sync route, req/s", fn_sync, bare_sync, 0),
                rps_target("Invoke API POST / bare GET route, req/s", invoke, bare, 0),
                rps_target("Invoke API POST / bare POST json route, req/s", invoke, bare_post, 0),
                p99_target("Invoke API POST / bare POST json route, p99", invoke, bare_post, 0),
                cpu_target("Invoke API POST / bare POST json route, by CPU µs/req", invoke, bare_post, 0),
                *(rps_target("bare again / bare (A/A control), req/s", again, bare, 0) for again in control),
                *(cpu_target("bare again / bare (A/A control), by CPU µs/req", again, bare, 0) for again in control),
            ]
        )
    print(f"# total {time.monotonic() - started:.0f} s")


def stack(env: dict[str, str], uvicorn_args: str) -> str:
    """Which HTTP parser and event loop uvicorn picks in the servers' environment ('auto' rules)."""
    import subprocess

    probe = (
        "import importlib.util as u, uvicorn, starlette;"
        "print(f'uvicorn {uvicorn.__version__}, starlette {starlette.__version__}, '"
        'f\'httptools {"yes" if u.find_spec("httptools") else "no"}, \''
        'f\'uvloop {"yes" if u.find_spec("uvloop") else "no"}\')'
    )
    found = subprocess.run([PYTHON, "-c", probe], env=env, capture_output=True, text=True, check=False).stdout.strip()
    return f"{found}; uvicorn options: {uvicorn_args or '(none: --http auto --loop auto)'}"


if __name__ == "__main__":
    main()
