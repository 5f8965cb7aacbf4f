"""Import time of lambdify next to starlette and mangum, each in a fresh interpreter.

    python benchmarks/imports.py [--rounds 25]

Each round runs `python -c "import X"` for every module and a bare `python -c pass`, in
turn, timing the whole subprocess (bytecode compiled beforehand for every module); the net
import time is a module's median minus the bare interpreter's median. `-X importtime`'s
cumulative figure for the top-level package is shown beside it.
TARGET: lambdify <= 0.5x mangum (net of interpreter start).

Then, in one more fresh interpreter with AWS_LAMBDA_RUNTIME_API set, it imports lambdify,
calls a sync handler as AWS's runtime would (`fn(event, context)`), and reports whether
starlette, uvicorn or asyncio were imported along the way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _timing import print_header, verdict

MODULES = ("lambdify", "mangum", "starlette", "starlette.applications")
TARGET = 0.5
HEAVY = ("starlette", "uvicorn", "asyncio", "anyio")

_AWS_PROBE = """
import json, sys, time
import lambdify
after_import = {name: name in sys.modules for name in HEAVY}

class AwsContext:
    function_name = "probe"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:probe"
    memory_limit_in_mb = "128"
    aws_request_id = "8f0c1a52-2a3e-4bd7-9d0b-0f6b0c6b6b6b"
    log_group_name = "/aws/lambda/probe"
    log_stream_name = "2026/01/01/[$LATEST]0123456789abcdef"
    identity = None
    client_context = None
    tenant_id = None
    _deadline = time.monotonic() + 3.0
    def get_remaining_time_in_millis(self):
        return int((self._deadline - time.monotonic()) * 1000)

@lambdify.handler
def echo(event, context):
    return {"echo": event, "request_id": context.aws_request_id}

result = echo({"x": 1}, AwsContext())
after_call = {name: name in sys.modules for name in HEAVY}
print(json.dumps({"result": result, "after_import": after_import, "after_call": after_call}))
"""


def bytecode_env(pycache: str) -> dict[str, str]:
    """Every module compiled once into a private cache, as an installed package would be.

    With PYTHONDONTWRITEBYTECODE set (as in this repository's dev environment), a source checkout
    is recompiled at every import while site-packages ship their .pyc files: an unfair race. A
    pycache prefix puts every module, ours and theirs, on the same footing without writing into
    the source tree.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def python(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run this interpreter from the private cache directory: with `-c`, the current directory comes
    first on sys.path, and the repository root would shadow whichever lambdify PYTHONPATH names."""
    return subprocess.run([sys.executable, *args], env=env, cwd=env["PYTHONPYCACHEPREFIX"], text=True, **kwargs)


def run_once(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    python(["-c", code], env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def importtime_us(module: str, env: dict[str, str]) -> int:
    """Cumulative µs of the top-level package as reported by `-X importtime`."""
    out = python(["-X", "importtime", "-c", f"import {module}"], env, check=True, capture_output=True)
    top = module.split(".")[0]
    cumulative = 0
    for line in out.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in (module, top):
            cumulative = max(cumulative, int(parts[1]))
    return cumulative


def measure(rounds: int, env: dict[str, str]) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    wall: dict[str, list[float]] = {name: [] for name in ("(bare python)", *MODULES)}
    cumulative: dict[str, list[int]] = {name: [] for name in MODULES}
    for code in ("pass", *(f"import {name}" for name in MODULES)):  # compile, and warm the OS file cache
        run_once(code, env)
    for _ in range(rounds):
        wall["(bare python)"].append(run_once("pass", env))
        for name in MODULES:
            wall[name].append(run_once(f"import {name}", env))
            cumulative[name].append(importtime_us(name, env))
    return wall, cumulative


def report_times(rounds: int, env: dict[str, str]) -> None:
    wall, cumulative = measure(rounds, env)
    ms = {name: (statistics.median(times) * 1e3, min(times) * 1e3) for name, times in wall.items()}
    bare_median, bare_min = ms.pop("(bare python)")
    header = f"{'module':<24}  {'wall median ms':>14}  {'wall min ms':>11}  {'net ms':>8}  {'-X importtime ms':>16}"
    print(header)
    print(f"{'(bare python)':<24}  {bare_median:>14.2f}  {bare_min:>11.2f}  {'-':>8}  {'-':>16}")
    for name, (median_ms, min_ms) in ms.items():
        importtime_ms = statistics.median(cumulative[name]) / 1e3
        net = median_ms - bare_median
        print(f"{name:<24}  {median_ms:>14.2f}  {min_ms:>11.2f}  {net:>8.2f}  {importtime_ms:>16.2f}")
    print()
    net_ratio = (ms["lambdify"][0] - bare_median) / (ms["mangum"][0] - bare_median)
    min_ratio = (ms["lambdify"][1] - bare_min) / (ms["mangum"][1] - bare_min)
    it_ratio = statistics.median(cumulative["lambdify"]) / statistics.median(cumulative["mangum"])
    judged = f"(target <= {TARGET}x)  {verdict(net_ratio, TARGET)}"
    print(f"lambdify / mangum, net wall time (medians): {net_ratio:.2f}x  {judged}")
    print(f"lambdify / mangum, net wall time (mins)   : {min_ratio:.2f}x  (for reference)")
    print(f"lambdify / mangum, -X importtime (medians): {it_ratio:.2f}x  (for reference)")
    print()


def report_aws_probe(env: dict[str, str]) -> None:
    env = dict(env, AWS_LAMBDA_RUNTIME_API="127.0.0.1:9001", AWS_LAMBDA_FUNCTION_NAME="probe")
    code = f"HEAVY = {HEAVY!r}\n{_AWS_PROBE}"
    out = python(["-c", code], env, capture_output=True)
    print("modules loaded on the AWS path (AWS_LAMBDA_RUNTIME_API set, sync handler called as fn(event, context)):")
    if out.returncode != 0:
        print(f"  the probe FAILED (exit {out.returncode}):")
        print("  " + out.stderr.strip().replace("\n", "\n  "))
        return
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  handler result: {probe['result']}")
    print(f"  {'module':<10}  {'after import':>12}  {'after call':>10}")
    for name in HEAVY:
        row = [("LOADED" if probe[phase][name] else "absent") for phase in ("after_import", "after_call")]
        print(f"  {name:<10}  {row[0]:>12}  {row[1]:>10}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=25, help="fresh interpreters per module (median reported)")
    args = parser.parse_args()
    print_header("import time, fresh interpreter per import")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lambdify-bench-pycache-") as pycache:
        env = bytecode_env(pycache)
        print(f"# bytecode: compiled once into a private PYTHONPYCACHEPREFIX for every module ({pycache})")
        print()
        report_times(args.rounds, env)
        report_aws_probe(env)
    print(f"# total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
