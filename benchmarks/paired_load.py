"""The HTTP targets measured in pairs running at the same time: a variant and its bare baseline
share one CPU, each loaded by its own `wrk`, so whatever else the machine does slows both alike.

    python benchmarks/paired_load.py [--rounds 5] [--duration 5] [--connections 16] [--only asgi|wsgi]

Why: on the reference machine (2 shared vCPUs) the speed of a CPU drifts by ±25% from one
minute to the next, so two servers measured one after the other (`http_serving.py`,
`middleware.py`) can land 10% apart even when they are the same app (their A/A control shows
it). Here both servers of a pair are pinned to CPU 0 and both `wrk`s to CPU 1, started together;
the kernel shares CPU 0 fairly between two busy servers, so the ratio of their req/s is the
ratio of their costs per request, measured under the same conditions. The A/A pair (the bare
app against itself) shows how exact that is.

Each round starts fresh servers for every pair: check, 1 s of load on both, then
`wrk -t1 -c16 -d{duration}s` on both at once. Pairs (uvicorn: h11, one worker; gunicorn: one worker):

- A/A: bare Starlette route vs the same app                                  (the noise floor)
- `fn.asgi`, async hello handler vs the bare route     TARGET >= 0.85x   (http_serving.py's apps)
- `fn.asgi`, sync hello handler vs the bare route                         (reference)
- the bare route sending an `x-amzn-RequestId` header too (as fn.asgi must), vs the bare route,
  and `fn.asgi` against that route: the same response on both sides       (reference)
- `ASGIMiddleware` vs the bare Starlette app           TARGET >= 0.9x    (middleware.py's apps)
- no-op ASGI middleware / `BaseHTTPMiddleware` vs the bare app            (reference; ours must
  beat BaseHTTPMiddleware)
- `WSGIMiddleware` on Flask vs bare Flask, gunicorn sync and gthread x4   TARGET >= 0.9x

Reported: per pair, the median over rounds of variant req/s / baseline req/s, with min and max.
(p99 targets need each server alone: see middleware.py.)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import http_serving
import middleware
from _load import (
    LOAD_CPU,
    Variant,
    describe_lambdify,
    lambdify_source,
    loaded_together,
    require_wrk,
    server_env,
    uvicorn,
)
from _timing import print_header

PAIRS_ASGI = [
    # (label, baseline module:attr, variant module:attr, target)
    ("A/A: bare Starlette route vs itself", "bench_bare:app", "bench_bare:app", None),
    ("fn.asgi async hello / bare route", "bench_bare:app", "bench_fn_async:app", 0.85),
    ("fn.asgi sync hello / bare route", "bench_bare:app", "bench_fn_sync:app", None),
    # fn.asgi must send x-amzn-RequestId on every response; the bare route sends one header less
    ("bare route + an x-amzn-RequestId header / bare route", "bench_bare:app", "bench_bare_id:app", None),
    ("fn.asgi async hello / bare route + x-amzn-RequestId", "bench_bare_id:app", "bench_fn_async:app", None),
    ("ASGIMiddleware / bare app", "bench_star_bare:app", "bench_star_lambdify:app", 0.9),
    ("no-op ASGI middleware / bare app", "bench_star_bare:app", "bench_star_noop:app", None),
    ("BaseHTTPMiddleware / bare app", "bench_star_bare:app", "bench_star_basehttp:app", None),
]
# The bare route answering with the header fn.asgi must add (a fixed id: making one is our
# cost, not the header's): what sending the same response costs the server and Starlette.
FILES = {
    "bench_bare_id.py": http_serving.FILES["bench_bare.py"].replace(
        'return PlainTextResponse("hello")',
        'return PlainTextResponse("hello", headers={"x-amzn-RequestId": "0b1f0f5e-1c1e-4c9e-9d6a-8a3c1e2f3a4b"})',
        1,
    ),
}
PAIRS_WSGI = [
    ("WSGIMiddleware / bare Flask, gunicorn sync", "bench_flask_bare:app", "bench_flask_lambdify:app", 0.9),
    ("WSGIMiddleware / bare Flask, gunicorn gthread x4", "bench_flask_bare:app", "bench_flask_lambdify:app", 0.9),
]


def server_argv(label: str, target: str) -> list[str]:
    if target.startswith("bench_flask"):
        worker = middleware.GTHREAD if "gthread" in label else middleware.SYNC
        return middleware.gunicorn(target, worker)
    return uvicorn(target, [])


def pair_once(cwd: Path, env: dict[str, str], label: str, targets: tuple[str, str], duration: float) -> float:
    """One round of one pair: variant req/s / baseline req/s, both loaded at the same time."""
    servers = [
        (Variant(f"{label} ({name})", name, server_argv(label, target)), env)
        for name, target in zip(("baseline", "variant"), targets, strict=True)
    ]
    baseline, variant = loaded_together(cwd, servers, duration, ARGS.connections)
    return variant / baseline


def run(pairs: Sequence[tuple[str, str, str, float | None]], rounds: int, duration: float) -> None:
    with tempfile.TemporaryDirectory(prefix="lambdify-paired-") as tmp:
        cwd = Path(tmp)
        for name, text in {**http_serving.FILES, **middleware.FILES, **FILES}.items():
            (cwd / name).write_text(text)
        env = server_env(str(lambdify_source().parent))
        ratios: dict[str, list[float]] = {label: [] for label, *_ in pairs}
        for round_no in range(rounds):
            line = []
            for label, baseline, variant, _target in pairs:
                ratio = pair_once(cwd, env, label, (baseline, variant), duration)
                ratios[label].append(ratio)
                line.append(f"{ratio:.3f}")
            print(f"#   round {round_no + 1}: " + "  ".join(line))
        print()
        print("| pair (variant / baseline, same CPU, same time) | median | min–max | rounds | target | verdict |")
        print("|---|---:|:---|---:|:---|:---|")
        for label, _baseline, _variant, target in pairs:
            values = ratios[label]
            median = statistics.median(values)
            verdict = "—" if target is None else ("PASS" if median >= target else "FAIL")
            limit = "reference" if target is None else f">= {target}x"
            spread = f"{min(values):.3f}–{max(values):.3f}"
            print(f"| {label} | {median:.3f}x | {spread} | {len(values)} | {limit} | {verdict} |")
        print()


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each measured wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", choices=("asgi", "wsgi"))
    ARGS = parser.parse_args()
    require_wrk()
    print_header("HTTP targets, each variant and its baseline loaded at the same time on one CPU")
    print(f"# lambdify: {describe_lambdify(lambdify_source())}")
    print(f"# servers pinned to CPU 0 (two at a time), wrk pinned to CPU {LOAD_CPU} (two at a time)")
    print()
    started = time.monotonic()
    pairs = {"asgi": PAIRS_ASGI, "wsgi": PAIRS_WSGI}
    for kind in (ARGS.only,) if ARGS.only else ("asgi", "wsgi"):
        run(pairs[kind], ARGS.rounds, ARGS.duration)
    print(f"# total {time.monotonic() - started:.0f} s")


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
