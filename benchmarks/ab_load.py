"""A/B: one app served by two copies of lambdify at the same time on one CPU, to measure a change.

    python benchmarks/ab_load.py OLD NEW [--app bench_star_lambdify] [--server uvicorn|sync|gthread]
                                         [--rounds 6] [--duration 4]

OLD and NEW are directories holding a `lambdify/` package (a checkout, `git worktree add
/tmp/old <commit>`, or a copy with one change undone). Each round starts a server for each (one
worker) on CPU 0, loads both at once with `wrk -t1 -c16` pinned to the other CPU, so that the
machine's drift hits both alike, and reports NEW's req/s / OLD's. Apps, all answering `GET /`
with `hello`: `bench_star_lambdify`, a Starlette app wrapped in `ASGIMiddleware` (uvicorn, h11);
`bench_fn_async`, `fn.asgi` of an async handler (uvicorn, h11); `bench_flask_lambdify`, a Flask
app wrapped in `WSGIMiddleware`, served by gunicorn with `--server sync|gthread`.
(`../shared/bench/run` measures each of these against its bare baseline; this script compares
two versions of lambdify with each other.)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _load import gunicorn, loaded_together, require_wrk, server_env, uvicorn
from _timing import print_header

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

APPS = {
    "bench_star_lambdify": _STARLETTE
    + """
from lambdify import ASGIMiddleware

app.add_middleware(ASGIMiddleware)
""",
    "bench_fn_async": """
from lambdify import handler


@handler(name="hello")
async def hello(event, context):
    return {"statusCode": 200, "body": "hello"}


app = hello.asgi
""",
    "bench_flask_lambdify": _FLASK
    + """
from lambdify import WSGIMiddleware

app.wsgi_app = WSGIMiddleware(app.wsgi_app)
""",
}

WORKERS = {"sync": ["-k", "sync"], "gthread": ["-k", "gthread", "--threads", "4"]}


def server_argv(app: str, server: str) -> list[str]:
    if server == "uvicorn":
        return uvicorn(f"{app}:app")
    return gunicorn(f"{app}:app", WORKERS[server])


def one_round(cwd: Path, trees: tuple[str, str], app: str, server_kind: str, duration: float) -> float:
    servers = []
    for name, tree in zip(("old", "new"), trees, strict=True):
        env = server_env()
        env["PYTHONPATH"] = f"{Path(tree).resolve()}:{cwd}"  # that lambdify/, then the apps
        servers.append((name, server_argv(app, server_kind), env))
    old, new = loaded_together(cwd, servers, duration)
    return new / old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--app", choices=APPS, default="bench_star_lambdify")
    parser.add_argument("--server", choices=("uvicorn", *WORKERS), default="uvicorn")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    require_wrk()
    print_header(f"A/B: {args.app} ({args.server}) served by {args.old} (old) and {args.new} (new), at the same time")
    with tempfile.TemporaryDirectory(prefix="lambdify-ab-") as tmp:
        cwd = Path(tmp)
        for name, text in APPS.items():
            (cwd / f"{name}.py").write_text(text)
        ratios = []
        for round_no in range(args.rounds):
            ratios.append(one_round(cwd, (args.old, args.new), args.app, args.server, args.duration))
            print(f"#   round {round_no + 1}: new/old {ratios[-1]:.3f}", flush=True)
    print(f"new/old req/s: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
