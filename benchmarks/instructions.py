"""Instructions per HTTP request, counted by valgrind's callgrind: a cost that does not drift with
the machine's load, unlike the timings of the load benchmarks.

    python benchmarks/instructions.py [--requests 1000] [--server] [--seconds 10]

In-process (always): each ASGI app is called in a loop as a server would call it (one request at
a time, a 3-header GET), once with 300 requests and once with 300 + `--requests`; the difference
of the two totals divided by `--requests` is the app's instructions per request, with the
interpreter's start and the warm-up cancelled out. Apps: the bare Starlette route (`Route("/")`
returning `PlainTextResponse("hello")`), the same app wrapped in a no-op pure-ASGI middleware and
in `ASGIMiddleware`, and `fn.asgi` of an async hello handler returning
`{"statusCode": 200, "body": "hello"}`.

With `--server`: the same apps under a real uvicorn (h11, one worker) running under callgrind on
127.0.0.1, loaded by `wrk -t1 -c4`: a 3 s warm-up, then the counters are zeroed
(`callgrind_control -z`), `wrk` runs `--seconds`, and the counters are dumped; instructions per
request = the dump's total / the requests wrk completed. This counts everything the server
process executes per request (parsing, the event loop, its task, our code), in user space only:
system calls are not counted, which makes a ratio here stricter than the same ratio in time.

Ratios are bare / variant, comparable to the load benchmarks' req/s ratios (>= 0.9x means the
variant executes at most ~11% more instructions than bare). Needs `valgrind` (and `wrk`, `curl`
for `--server`). Takes about a minute in-process, two more with `--server`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import describe_lambdify, free_port, lambdify_source
from _timing import print_header

APPS = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lambdify import ASGIMiddleware, handler


async def hello(request):
    return PlainTextResponse("hello")


class NoOp:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


bare = Starlette(routes=[Route("/", hello)])
noop = NoOp(Starlette(routes=[Route("/", hello)]))
wrapped = Starlette(routes=[Route("/", hello)])
wrapped.add_middleware(ASGIMiddleware)


@handler(name="hello")
async def hello_fn(event, context):
    return {"statusCode": 200, "body": "hello"}


fn_asgi = hello_fn.asgi
"""

DRIVER = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
import bench_instruction_apps as apps
app, n = getattr(apps, sys.argv[2]), int(sys.argv[3])
SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
         "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
         "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
         "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}
async def send(message):
    pass
async def main():
    for _ in range(n):
        await app(dict(SCOPE), receive, send)
asyncio.run(main())
"""

VARIANTS = [
    ("bare", "bare Starlette route"),
    ("noop", "+ no-op ASGI middleware"),
    ("wrapped", "+ ASGIMiddleware"),
    ("fn_asgi", "fn.asgi, async hello handler"),
]
WARM = 300


def collected(argv: list[str], cwd: Path) -> int:
    """Run `argv` under callgrind in `cwd` (not the repository: `python -c` puts its working
    directory first on sys.path, and a checkout there would shadow PYTHONPATH); the total
    instruction count it reports."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no count in callgrind's output:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def in_process(folder: Path, requests: int) -> dict[str, float]:
    counts = {}
    for name, _label in VARIANTS:
        base = collected([sys.executable, "-c", DRIVER, str(folder), name, str(WARM)], folder)
        more = collected([sys.executable, "-c", DRIVER, str(folder), name, str(WARM + requests)], folder)
        counts[name] = (more - base) / requests
    return counts


def under_server(folder: Path, name: str, seconds: float) -> tuple[float, int]:
    """(instructions per request, requests) for app `name` under uvicorn running in callgrind."""
    port = free_port()
    out = folder / f"callgrind-{name}.out"
    url = f"http://127.0.0.1:{port}/"
    argv = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, "-m", "uvicorn", f"bench_instruction_apps:{name}", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    server = subprocess.Popen(argv, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            if subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=False).returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"uvicorn under valgrind did not answer on {url}")
        wrk = ["wrk", "-t1", "-c4"]
        subprocess.run([*wrk, "-d3s", url], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "-z", str(server.pid)], capture_output=True, check=True)
        done = subprocess.run([*wrk, f"-d{seconds:g}s", url], capture_output=True, text=True, check=True)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True, check=True)
    finally:
        server.terminate()
        server.wait(60)
    match = re.search(r"(\d+) requests in", done.stdout)
    if match is None:
        raise RuntimeError(f"no request count in wrk's output:\n{done.stdout}")
    dumps = sorted(folder.glob(f"callgrind-{name}.out.*"))
    totals = re.search(r"^summary: (\d+)", dumps[-1].read_text(), re.MULTILINE) if dumps else None
    if totals is None:
        raise RuntimeError("no summary line in the callgrind dump")
    return int(totals.group(1)) / int(match.group(1)), int(match.group(1))


def print_counts(title: str, counts: dict[str, float], note: dict[str, str] | None = None) -> None:
    print(f"## {title}")
    print("| app | instructions / request | bare / app | added over bare |")
    print("|-----|-----------------------:|-----------:|----------------:|")
    bare = counts["bare"]
    for name, label in VARIANTS:
        if name in counts:
            extra = f" ({note[name]})" if note and name in note else ""
            count = counts[name]
            print(f"| {label}{extra} | {count:,.0f} | {bare / count:.3f}x | {count - bare:+,.0f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="requests counted in-process (default 1000)")
    parser.add_argument("--server", action="store_true", help="also count under a real uvicorn server")
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk's measured run per server (default 10)")
    args = parser.parse_args()
    for tool in ["valgrind", *(["wrk", "curl", "callgrind_control"] if args.server else [])]:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (apt-get install -y valgrind wrk curl)")
    print_header("instructions per HTTP request (valgrind callgrind)")
    print(f"# lambdify: {describe_lambdify(lambdify_source())}")
    print()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench_instruction_apps.py").write_text(APPS)
        print_counts(f"in-process ({args.requests} requests after {WARM} warm-up)", in_process(folder, args.requests))
        if args.server:
            counts, note = {}, {}
            for name, _label in VARIANTS:
                counts[name], served = under_server(folder, name, args.seconds)
                note[name] = f"{served} requests"
            print_counts(f"uvicorn (h11) under callgrind, wrk -t1 -c4 for {args.seconds:g} s", counts, note)
    print(f"# total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
