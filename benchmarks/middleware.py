"""Wrapping existing web apps: `ASGIMiddleware` on Starlette under uvicorn and `WSGIMiddleware` on
Flask under gunicorn, each against the bare app in the same run.

    python benchmarks/middleware.py [--rounds 5] [--duration 5] [--warmup 3] [--connections 16]
                                    [--uvicorn-args "..."] [--extra-path DIR] [--only asgi|wsgi] [--control]

Variants (each its own server process, one worker, quiet, pinned to CPU 0; wrk on CPU 1), all
answering `GET /` with the text `hello`:

ASGI, uvicorn (`--log-level warning --no-access-log`):
- bare: `Starlette(routes=[Route("/", hello)])`, `hello` returning `PlainTextResponse("hello")`
- ASGIMiddleware: the same app, `app.add_middleware(ASGIMiddleware)` (default options)
      TARGETS: >= 0.9x bare req/s, p99 <= 1.2x bare, and more req/s than BaseHTTPMiddleware
- BaseHTTPMiddleware: `app.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)`, a no-op
  `return await call_next(request)`                                      (the one to beat)
- a no-op pure ASGI middleware (`await self.app(scope, receive, send)`): the cost of any one
  layer, for reference
- with `--control`: the bare app again, as a separate variant (an A/A control: how far apart
  two identical variants land on this machine)

WSGI, gunicorn (`--log-level warning`, no access log), Flask `@app.get("/")` returning "hello":
- sync worker (`-w 1 -k sync`; it closes the connection after each response): bare vs
  `app.wsgi_app = WSGIMiddleware(app.wsgi_app)`      TARGETS: >= 0.9x bare req/s, p99 <= 1.2x bare
- gthread worker (`-w 1 -k gthread --threads 4`, keep-alive): the same pair, same targets

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
    Slot,
    Target,
    Variant,
    cpu_target,
    measure,
    med,
    p99_target,
    print_header,
    print_table,
    print_targets,
    require_wrk,
    rps_target,
    running,
    server_env,
    uvicorn,
)

RPS_TARGET = 0.9
P99_TARGET = 1.2

_STARLETTE = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request):
    return PlainTextResponse("hello")


app = Starlette(routes=[Route("/", hello)])
"""

_FLASK = """
from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello():
    return "hello"
"""

FILES = {
    "bench_star_bare.py": _STARLETTE,
    "bench_star_again.py": _STARLETTE,
    "bench_star_lambdify.py": _STARLETTE
    + """
from lambdify import ASGIMiddleware

app.add_middleware(ASGIMiddleware)
""",
    "bench_star_basehttp.py": _STARLETTE
    + """
from starlette.middleware.base import BaseHTTPMiddleware


async def passthrough(request, call_next):
    return await call_next(request)


app.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)
""",
    "bench_star_noop.py": _STARLETTE
    + """

class NoOp:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


app.add_middleware(NoOp)
""",
    "bench_flask_bare.py": _FLASK,
    "bench_flask_lambdify.py": _FLASK
    + """
from lambdify import WSGIMiddleware

app.wsgi_app = WSGIMiddleware(app.wsgi_app)
""",
}


def gunicorn(target: str, worker: list[str]) -> list[str]:
    return [PYTHON, "-m", "gunicorn", "-w", "1", *worker, "-b", "127.0.0.1:{port}", "--log-level", "warning", target]


SYNC = ["-k", "sync"]
GTHREAD = ["-k", "gthread", "--threads", "4"]


def asgi_variants(extra: list[str], control: bool) -> list[Variant]:
    chosen = [
        ("Starlette bare", "bare", "bench_star_bare"),
        ("Starlette + ASGIMiddleware", "lambdify", "bench_star_lambdify"),
        ("Starlette + BaseHTTPMiddleware", "basehttp", "bench_star_basehttp"),
        ("Starlette + no-op ASGI middleware", "noop", "bench_star_noop"),
    ]
    if control:  # the same bare app again: how far apart two identical variants land (the noise floor)
        chosen.append(("Starlette bare, again (A/A control)", "bare-again", "bench_star_again"))
    return [
        Variant(label, short, uvicorn(f"{module}:app", extra), expect_body=b"hello") for label, short, module in chosen
    ]


def wsgi_variants() -> list[Variant]:
    return [
        Variant(label, short, gunicorn(f"{module}:app", worker), expect_body=b"hello")
        for label, short, module, worker in (
            ("Flask bare, gunicorn sync", "sync-bare", "bench_flask_bare", SYNC),
            ("Flask + WSGIMiddleware, gunicorn sync", "sync-lambdify", "bench_flask_lambdify", SYNC),
            ("Flask bare, gunicorn gthread x4", "gthread-bare", "bench_flask_bare", GTHREAD),
            ("Flask + WSGIMiddleware, gthread x4", "gthread-lambdify", "bench_flask_lambdify", GTHREAD),
        )
    ]


def asgi_targets(bare: Slot, wrapped: Slot, basehttp: Slot, noop: Slot, *control: Slot) -> list[Target]:
    beats = Target(
        "ASGIMiddleware / BaseHTTPMiddleware, req/s",
        med(wrapped, "rps") / med(basehttp, "rps"),
        rps_target("", wrapped, basehttp, 0).paired,
        1.0,
        True,
    )
    return [
        rps_target("ASGIMiddleware / bare, req/s", wrapped, bare, RPS_TARGET),
        p99_target("ASGIMiddleware / bare, p99", wrapped, bare, P99_TARGET),
        beats,
        rps_target("BaseHTTPMiddleware / bare, req/s", basehttp, bare, 0),
        p99_target("BaseHTTPMiddleware / bare, p99", basehttp, bare, 0),
        rps_target("no-op ASGI middleware / bare, req/s", noop, bare, 0),
        rps_target("ASGIMiddleware / no-op ASGI middleware, req/s", wrapped, noop, 0),
        cpu_target("ASGIMiddleware / bare, by CPU µs/req", wrapped, bare, 0),
        cpu_target("BaseHTTPMiddleware / bare, by CPU µs/req", basehttp, bare, 0),
        *(rps_target("bare again / bare (A/A control), req/s", again, bare, 0) for again in control),
        *(cpu_target("bare again / bare (A/A control), by CPU µs/req", again, bare, 0) for again in control),
    ]


def wsgi_targets(sync_bare: Slot, sync_wrapped: Slot, gt_bare: Slot, gt_wrapped: Slot) -> list[Target]:
    return [
        rps_target("WSGIMiddleware / bare (sync), req/s", sync_wrapped, sync_bare, RPS_TARGET),
        p99_target("WSGIMiddleware / bare (sync), p99", sync_wrapped, sync_bare, P99_TARGET),
        rps_target("WSGIMiddleware / bare (gthread x4), req/s", gt_wrapped, gt_bare, RPS_TARGET),
        p99_target("WSGIMiddleware / bare (gthread x4), p99", gt_wrapped, gt_bare, P99_TARGET),
        cpu_target("WSGIMiddleware / bare (sync), by CPU µs/req", sync_wrapped, sync_bare, 0),
        cpu_target("WSGIMiddleware / bare (gthread x4), by CPU µs/req", gt_wrapped, gt_bare, 0),
    ]


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
    parser.add_argument("--extra-path", default=None, help="a directory prepended to the servers' PYTHONPATH")
    parser.add_argument("--control", action="store_true", help="add the bare app again (an A/A noise control)")
    parser.add_argument("--only", choices=("asgi", "wsgi"), default=None, help="run one half only")
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
    asgi = asgi_variants(shlex.split(args.uvicorn_args), args.control) if args.only != "wsgi" else []
    wsgi = wsgi_variants() if args.only != "asgi" else []
    chosen = asgi + wsgi
    title = "wrapping existing apps: ASGIMiddleware (uvicorn) and WSGIMiddleware (gunicorn) vs bare"
    print_header(title, settings, chosen)
    started = time.monotonic()
    with running(chosen, env, FILES) as bench:
        print(f"#   uvicorn options: {args.uvicorn_args or '(none: --http auto --loop auto)'}")
        print()
        servers = bench.slots
        measure(bench, settings)
        print()
        print_table(servers)
        targets: list[Target] = []
        if asgi:
            targets += asgi_targets(*servers[: len(asgi)])
        if wsgi:
            targets += wsgi_targets(*servers[len(asgi) :])
        print_targets(targets)
    print(f"# total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
