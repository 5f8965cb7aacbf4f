"""A/B: one app served by two copies of lambdify at the same time on one CPU, to measure a change.

    python benchmarks/ab_load.py OLD NEW [--app bench_star_lambdify] [--server uvicorn|sync|gthread]
                                         [--rounds 6] [--duration 4]

OLD and NEW are directories holding a `lambdify/` package (a checkout, `git worktree add
/tmp/old <commit>`, or a copy with one change undone). Each round starts a uvicorn for each (h11,
one worker) on CPU 0, loads both at once with `wrk -t1 -c16` pinned to the other CPU, as
`paired_load.py` does, and reports NEW's req/s / OLD's. The apps are those of
`http_serving.py` and `middleware.py` (`bench_star_lambdify`: a Starlette hello app wrapped in
ASGIMiddleware; `bench_fn_async`: `fn.asgi` of an async hello handler; `bench_flask_lambdify`:
a Flask hello app wrapped in WSGIMiddleware, served by gunicorn with `--server sync|gthread`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import http_serving
import middleware
from _load import Variant, loaded_together, require_wrk, server_env, uvicorn
from _timing import print_header

SERVERS = {"sync": middleware.SYNC, "gthread": middleware.GTHREAD}


def server_argv(app: str, server: str) -> list[str]:
    if server == "uvicorn":
        return uvicorn(f"{app}:app", [])
    return middleware.gunicorn(f"{app}:app", SERVERS[server])


def one_round(cwd: Path, trees: tuple[str, str], app: str, server_kind: str, duration: float) -> float:
    servers = []
    for name, tree in zip(("old", "new"), trees, strict=True):
        env = server_env(str(Path(tree).resolve()))
        env["PYTHONPATH"] = f"{Path(tree).resolve()}:{cwd}"  # that lambdify/, then the apps
        servers.append((Variant(name, name, server_argv(app, server_kind)), env))
    old, new = loaded_together(cwd, servers, duration)
    return new / old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--app", default="bench_star_lambdify")
    parser.add_argument("--server", choices=("uvicorn", *SERVERS), default="uvicorn")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    require_wrk()
    print_header(f"A/B: {args.app} ({args.server}) served by {args.old} (old) and {args.new} (new), at the same time")
    with tempfile.TemporaryDirectory(prefix="lambdify-ab-") as tmp:
        cwd = Path(tmp)
        for name, text in {**http_serving.FILES, **middleware.FILES}.items():
            (cwd / name).write_text(text)
        ratios = []
        for round_no in range(args.rounds):
            ratios.append(one_round(cwd, (args.old, args.new), args.app, args.server, args.duration))
            print(f"#   round {round_no + 1}: new/old {ratios[-1]:.3f}", flush=True)
    print(f"new/old req/s: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
