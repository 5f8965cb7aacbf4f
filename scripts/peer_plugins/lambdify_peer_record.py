"""Loaded with `-p` into both runs of a peer suite (plain and wrapped), so that both see the same pytest.

- Writes every test's reports, one JSON line each, to `$LAMBDIFY_PEER_RECORD`: the driver compares
  outcomes by node id instead of trusting pytest's summary line alone.
- Restores `_pytest.monkeypatch.notset` where the running pytest no longer has it: Flask's conftest
  imports that private name (removed in pytest 9.2) and could not run on this pytest at all otherwise.
"""

from __future__ import annotations

import json
import os
from typing import IO, Any

import _pytest.compat
import _pytest.monkeypatch
import pytest

if not hasattr(_pytest.monkeypatch, "notset"):
    _pytest.monkeypatch.notset = _pytest.compat.NOTSET  # type: ignore[attr-defined]

_EXCERPT_CHARS = 6000
_out: IO[str] | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _out
    path = os.environ.get("LAMBDIFY_PEER_RECORD")
    if path and _out is None:
        _out = open(path, "w", encoding="utf-8", buffering=1)  # line-buffered: a killed run keeps its lines


def pytest_unconfigure(config: pytest.Config) -> None:
    global _out
    if _out is not None:
        _out.close()
        _out = None


def _write(record: dict[str, Any]) -> None:
    if _out is not None:
        _out.write(json.dumps(record) + "\n")


def _excerpt(report: pytest.CollectReport | pytest.TestReport) -> str:
    text = report.longreprtext or ""
    return text if len(text) <= _EXCERPT_CHARS else "...\n" + text[-_EXCERPT_CHARS:]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    record: dict[str, Any] = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome}
    if hasattr(report, "wasxfail"):
        record["xfail"] = True
    if report.failed:
        record["excerpt"] = _excerpt(report)
    _write(record)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _write({"nodeid": report.nodeid, "when": "collect", "outcome": "failed", "excerpt": _excerpt(report)})
