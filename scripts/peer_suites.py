"""Run Flask's and FastAPI's own test suites twice - plain, then with every app wrapped in lambdify's
middleware - and report any test whose outcome differs (DESIGN.md §5: wrapping an app must not change
the outcome of that app's own test suite, even under `filterwarnings = error`).

For each project: the version installed in this interpreter is found with importlib.metadata, its sdist
is downloaded once into `.peer-suites/` (git-ignored) and unpacked, and its tests are run from the
unpacked tree with this interpreter's pytest under the project's own pytest settings (its pyproject's
`[tool.pytest.ini_options]`/`[tool.pytest]`: `filterwarnings = error` and all). Both runs load
`scripts/peer_plugins/lambdify_peer_record.py` (per-test outcomes as JSON lines); the wrapped run also
loads `lambdify_peer_wrap.py`, which wraps each Flask app's `wsgi_app` in `WSGIMiddleware` or serves
each FastAPI app through `ASGIMiddleware`, and counts the requests that became invocations.

A run is bounded by `--run-timeout` (killed, with its process group, and reported as hung; a run that
printed its summary and then did not exit within `--exit-grace` seconds is reported as hung at exit),
and each test by pytest-timeout when the project sets no timeout of its own. The exit status is 0 only
if, for every project run, the wrapped run gave each test the outcome the plain run gave it, served at
least one request through lambdify, and neither run hung.

Usage (from the repo root, in a venv with `pip install -e '.[dev,peers]'`):

    .venv/bin/python scripts/peer_suites.py                    # both projects
    .venv/bin/python scripts/peer_suites.py --project flask    # one
    .venv/bin/python scripts/peer_suites.py --project fastapi -k "websocket or lifespan"
    .venv/bin/python scripts/peer_suites.py --keep-going -- -x  # args after -- go to both pytest runs

Without `--keep-going` the script stops after the first project that diverges. Logs and per-test records
of each run are left in `.peer-suites/runs/`. Tests that cannot run here are deselected from both runs
alike (see `DESELECT`); the script prints each deselection and its reason, and which of the sdist's own
test requirements are not installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

REPO = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "peer_plugins"
PROJECTS = ("flask", "fastapi")
SUMMARY = re.compile(r"^=*\s*(?P<counts>(?:\d+ \w+(?:, )?)+|no tests ran) in (?P<secs>[\d.]+)s\b")
COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|rerun)")


@dataclass(frozen=True)
class Deselect:
    """Tests left out of both runs: `target` is a node id or path prefix; only when `unless` is not importable."""

    target: str
    reason: str
    unless: str | None = None


DESELECT: dict[str, list[Deselect]] = {
    "flask": [],
    "fastapi": [
        Deselect("tests/test_fastapi_cli.py", "needs fastapi-cli (in the peers extra)", unless="fastapi_cli"),
    ],
}


@dataclass
class Run:
    mode: str
    returncode: int | None  # None: killed at the run timeout
    wall: float
    summary: str | None
    counts: dict[str, int]
    pytest_secs: float | None
    outcomes: dict[str, str]
    excerpts: dict[str, str]
    log: Path
    served: dict[str, Any] = field(default_factory=dict)

    @property
    def hung(self) -> bool:
        return self.returncode is None

    def describe(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in self.counts.items()) or "no summary line"
        timing = f"pytest {self.pytest_secs:.1f}s, " if self.pytest_secs is not None else ""
        state = f"exit {self.returncode}"
        if self.hung:
            state = "HUNG AT EXIT (killed)" if self.summary else "HUNG (killed)"
        return f"{self.mode:8} {counts}  [{timing}wall {self.wall:.1f}s, {state}]"


def installed_version(project: str) -> str:
    try:
        return importlib.metadata.version(project)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"{project} is not installed in {sys.executable}") from None


def sdist_tree(project: str, version: str, cache: Path) -> Path:
    """The unpacked sdist of `project==version`, downloaded into `cache` unless already there."""
    tree = cache / f"{project}-{version}"
    if (tree / "pyproject.toml").exists() or (tree / "setup.cfg").exists():
        return tree
    archive = cache / f"{project}-{version}.tar.gz"
    if not archive.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
            + ["--quiet", f"{project}=={version}", "-d", str(cache)],
            check=True,
        )
    with tarfile.open(archive) as tar:
        top = {name.split("/", 1)[0] for name in tar.getnames()}
        if len(top) != 1:
            raise SystemExit(f"{archive}: expected one top-level directory, found {sorted(top)}")
        tar.extractall(cache, filter="data")
    unpacked = cache / top.pop()
    if unpacked != tree:
        unpacked.rename(tree)
    return tree


def pytest_settings(tree: Path) -> dict[str, Any]:
    pyproject = tree / "pyproject.toml"
    if not pyproject.exists():
        return {}
    tool = tomllib.loads(pyproject.read_text()).get("tool", {})
    pytest_table = tool.get("pytest", {})
    settings: dict[str, Any] = pytest_table.get("ini_options", pytest_table)
    return settings


def missing_test_requirements(tree: Path) -> list[str]:
    """The sdist's `tests` dependency group (includes resolved) that this interpreter lacks."""
    pyproject = tree / "pyproject.toml"
    groups = tomllib.loads(pyproject.read_text()).get("dependency-groups", {}) if pyproject.exists() else {}

    def flatten(name: str) -> list[str]:
        items: list[str] = []
        for item in groups.get(name, []):
            items += flatten(item["include-group"]) if isinstance(item, dict) else [item]
        return items

    missing = []
    for spec in flatten("tests"):
        try:
            requirement = Requirement(spec)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(spec)
    return missing


def deselections(project: str) -> list[Deselect]:
    return [d for d in DESELECT[project] if d.unless is None or importlib.util.find_spec(d.unless) is None]


def final_outcomes(record: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Per node id: its outcome as pytest counts it (a failed setup/teardown is an error), and failure text."""
    outcomes: dict[str, str] = {}
    excerpts: dict[str, str] = {}
    if not record.exists():
        return outcomes, excerpts
    for line in record.read_text(encoding="utf-8").splitlines():
        try:
            report = json.loads(line)
        except json.JSONDecodeError:  # the last line of a killed run
            continue
        nodeid, when, outcome = report["nodeid"], report["when"], report["outcome"]
        if outcome == "failed":
            label = "failed" if when == "call" else "error"
            previous = outcomes.get(nodeid, "passed")
            outcomes[nodeid] = label if previous in ("passed", label) else "failed+error"
            excerpts[nodeid] = (excerpts.get(nodeid, "") + f"[{when}]\n" + report.get("excerpt", "")).strip()
        elif when == "call" or (when == "setup" and outcome == "skipped"):
            if report.get("xfail"):
                outcome = "xfailed" if outcome == "skipped" else "xpassed"
            if outcomes.get(nodeid) not in ("error", "failed", "failed+error"):
                outcomes[nodeid] = outcome
        elif when == "setup":
            outcomes.setdefault(nodeid, "passed")
    return outcomes, excerpts


def parse_summary(log: Path, last: int | None = None) -> tuple[str | None, dict[str, int], float | None]:
    """pytest's final line (among the `last` lines of the log, if given): the line, its counts, its seconds."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in reversed(lines[-last:] if last else lines):
        match = SUMMARY.match(line.strip())
        if match:
            counts = {kind: int(n) for n, kind in COUNT.findall(match["counts"])}
            return line.strip(" ="), counts, float(match["secs"])
    return None, {}, None


def wait_bounded(process: subprocess.Popen[bytes], log: Path, deadline: float, exit_grace: float) -> int | None:
    """The exit status, or None after killing the run's process group: at `deadline`, or `exit_grace`
    seconds after pytest printed its summary line without the interpreter exiting."""
    exit_deadline = None
    while True:
        try:
            return process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if exit_deadline is None and parse_summary(log, last=5)[0] is not None:
            exit_deadline = now + exit_grace
        if now >= deadline or (exit_deadline is not None and now >= exit_deadline):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return None


def run_suite(
    project: str,
    tree: Path,
    mode: str,
    runs: Path,
    pytest_args: list[str],
    limits: tuple[float, float, float],
) -> Run:
    run_timeout, exit_grace, test_timeout = limits
    stem = runs / f"{project}-{mode}"
    log, record, served = stem.with_suffix(".log"), stem.with_suffix(".jsonl"), stem.with_suffix(".counts.json")
    for path in (log, record, served):
        path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "lambdify_peer_record"]
    if mode == "wrapped":
        command += ["-p", "lambdify_peer_wrap"]
    if "timeout" not in pytest_settings(tree) and importlib.util.find_spec("pytest_timeout") is not None:
        command.append(f"--timeout={test_timeout:g}")
    command += [f"--deselect={d.target}" for d in deselections(project)] + pytest_args
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])),
        "LAMBDIFY_PEER_TARGET": project,
        "LAMBDIFY_PEER_RECORD": str(record),
        "LAMBDIFY_PEER_COUNTS": str(served),
    }
    if importlib.util.find_spec("lambdify") is None:  # no editable install: the repo's own copy
        env["PYTHONPATH"] += os.pathsep + str(REPO)
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(
            command, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        returncode = wait_bounded(process, log, started + run_timeout, exit_grace)
    wall = time.monotonic() - started
    summary, counts, pytest_secs = parse_summary(log)
    outcomes, excerpts = final_outcomes(record)
    run = Run(mode, returncode, wall, summary, counts, pytest_secs, outcomes, excerpts, log)
    if served.exists():
        run.served = json.loads(served.read_text())
    return run


def excerpt_tail(text: str, lines: int) -> str:
    kept = text.splitlines()
    return "\n".join((["..."] if len(kept) > lines else []) + kept[-lines:])


def last_error_line(text: str) -> str:
    """The first line of the last `E   ...` block of a pytest failure, or the last exception line
    of a printed traceback or exception group: what the differing tests are grouped by."""
    lines = text.splitlines()
    marked = [i for i, line in enumerate(lines) if line.startswith("E ")]
    if marked:
        first = marked[-1]
        while first - 1 in marked:
            first -= 1
        found = lines[first].removeprefix("E").strip()
    else:
        found = next(
            (
                line.strip().lstrip("|").strip()
                for line in reversed(lines)
                if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit|Warning)\b", line.strip().lstrip("|").strip())
            ),
            "",
        )
    return re.sub(r"0x[0-9a-f]+", "0x..", found)[:160]


def compare(project: str, plain: Run, wrapped: Run, max_excerpts: int, excerpt_lines: int) -> bool:
    """Print both runs and the tests whose outcome differs; True if the wrapped run is transparent."""
    print(f"  {plain.describe()}\n  {wrapped.describe()}")
    if wrapped.served:
        print(
            f"  lambdify served {wrapped.served.get('served', 0)} requests "
            f"({wrapped.served.get('apps', 0)} apps wrapped, lambdify from {wrapped.served.get('lambdify')})"
        )
    ok = True
    for run in (plain, wrapped):
        if run.hung:
            ok = False
            what = "did not exit after its summary line" if run.summary else "did not finish within the run timeout"
            print(f"  !! the {run.mode} run {what} (killed); log: {run.log}")
        elif run.returncode not in (0, 1):
            ok = False
            print(f"  !! the {run.mode} run ended with pytest exit status {run.returncode}; log: {run.log}")
    if not wrapped.served.get("served"):
        ok = False
        print("  !! the wrapped run served no request through lambdify: the wrapping did not happen")
    differing = sorted(
        nodeid
        for nodeid in plain.outcomes.keys() | wrapped.outcomes.keys()
        if plain.outcomes.get(nodeid, "absent") != wrapped.outcomes.get(nodeid, "absent")
    )
    if differing:
        ok = False
        print(f"  {len(differing)} tests differ (plain -> wrapped):")
        for nodeid in differing:
            print(f"    {plain.outcomes.get(nodeid, 'absent')} -> {wrapped.outcomes.get(nodeid, 'absent')}  {nodeid}")
        causes: dict[str, list[str]] = {}
        for nodeid in differing:
            causes.setdefault(last_error_line(wrapped.excerpts.get(nodeid, "")), []).append(nodeid)
        print("  grouped by the last error line of the wrapped run:")
        for cause, nodeids in sorted(causes.items(), key=lambda item: -len(item[1])):
            print(f"    {len(nodeids):5}  {cause or '(no failure text)'}  e.g. {nodeids[0]}")
        for nodeid in differing[:max_excerpts]:
            text = wrapped.excerpts.get(nodeid) or plain.excerpts.get(nodeid)
            if text:
                print(f"\n  --- {nodeid}\n" + excerpt_tail(text, excerpt_lines))
        if len(differing) > max_excerpts:
            print(f"\n  ({len(differing) - max_excerpts} more; full reports in {wrapped.log.with_suffix('.jsonl')})")
    else:
        print("  no test differs")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--project", choices=[*PROJECTS, "all"], default="all")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression, passed to both runs")
    parser.add_argument("--keep-going", action="store_true", help="run every project even after one diverges")
    parser.add_argument("--cache", type=Path, default=REPO / ".peer-suites", help="sdists, trees and run logs")
    parser.add_argument("--run-timeout", type=float, default=1800, help="seconds for one pytest run (default 1800)")
    parser.add_argument("--exit-grace", type=float, default=60, help="seconds to exit after the summary line")
    parser.add_argument("--test-timeout", type=float, default=60, help="per test, where the project sets none")
    parser.add_argument("--max-excerpts", type=int, default=40, help="failure excerpts printed per project")
    parser.add_argument("--excerpt-lines", type=int, default=30, help="lines kept of each excerpt")
    parser.add_argument("pytest_args", nargs="*", help="after --: more arguments for both pytest runs")
    args = parser.parse_args(argv)

    runs = args.cache / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    pytest_args = list(args.pytest_args) + (["-k", args.keyword] if args.keyword else [])
    all_ok = True
    for project in PROJECTS if args.project == "all" else (args.project,):
        version = installed_version(project)
        tree = sdist_tree(project, version, args.cache)
        settings = pytest_settings(tree)
        print(f"== {project} {version} ({tree})")
        print(f"  pytest settings: filterwarnings={settings.get('filterwarnings')} timeout={settings.get('timeout')}")
        missing = missing_test_requirements(tree)
        if missing:
            print(f"  not installed from the sdist's tests group: {', '.join(missing)}")
        for deselect in deselections(project):
            print(f"  deselected from both runs: {deselect.target} ({deselect.reason})")
        results = [
            run_suite(project, tree, mode, runs, pytest_args, (args.run_timeout, args.exit_grace, args.test_timeout))
            for mode in ("plain", "wrapped")
        ]
        ok = compare(project, *results, args.max_excerpts, args.excerpt_lines)
        all_ok = all_ok and ok
        if not ok and not args.keep_going:
            break
    print("peer suites: " + ("wrapped == plain" if all_ok else "DIVERGED"))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
