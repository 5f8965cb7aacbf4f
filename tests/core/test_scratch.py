from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from lambdify import Function, LambdaContext, handler
from lambdify.core import scratch

MB = 1024 * 1024


def _backdate(path: Path) -> None:
    # As if the directory had last changed a while ago: its mtime is then trusted (scratch._COARSE_NS).
    old = time.time_ns() - 10 * 10**9
    os.utime(path, ns=(old, old))


def _wait_out(quota: scratch.Quota) -> None:
    # Walks are spaced by _SHARE times the last one's duration.
    time.sleep(max(0.01, scratch._SHARE * quota.cost))


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every full walk of a scratch directory, by path."""
    seen: list[str] = []
    walk = scratch.scratch_usage_mb

    def counted(path: Path | str) -> float:
        seen.append(os.fspath(path))
        return walk(path)

    monkeypatch.setattr(scratch, "scratch_usage_mb", counted)
    return seen


def test_the_check_walks_when_the_top_level_changes_or_when_due(
    tmp_path: Path, walks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    quota = scratch.Quota(tmp_path, tmp_mb=1)
    assert quota.check() is None and len(walks) == 1  # first check: measured
    _backdate(tmp_path)
    _wait_out(quota)
    assert quota.check() is None and len(walks) == 2  # the mtime moved
    for _ in range(1000):
        assert quota.check() is None
    assert len(walks) == 2  # nothing changed, and the last walk is recent: one stat each

    _wait_out(quota)
    (tmp_path / "big.bin").write_bytes(b"x" * 2 * MB)  # a new entry moves the mtime: measured at once
    assert quota.check() == pytest.approx(2, abs=0.1) and len(walks) == 3

    (tmp_path / "big.bin").write_bytes(b"")
    _backdate(tmp_path)
    _wait_out(quota)
    assert quota.check() is None and len(walks) == 4
    with (tmp_path / "big.bin").open("ab") as file:  # growing in place leaves the directory's mtime alone
        file.write(b"x" * 2 * MB)
    assert quota.check() is None and len(walks) == 4  # not seen yet...
    monkeypatch.setattr(scratch, "_REWALK", 0.0)
    monkeypatch.setattr(scratch, "_BUDGET", 1.0)
    _wait_out(quota)
    assert quota.check() == pytest.approx(2, abs=0.1) and len(walks) == 5  # ...until due


def test_walks_take_a_bounded_share_of_the_time(tmp_path: Path, walks: list[str]) -> None:
    # A handler adding a file at every invocation moves the mtime every time; walks still wait
    # for _SHARE times the last walk's duration.
    for i in range(300):
        (tmp_path / f"f{i}").write_bytes(b"x")
    quota = scratch.Quota(tmp_path, tmp_mb=1)
    quota.check()
    quota.cost = 3600.0  # as if that walk had been very slow
    for i in range(100):
        (tmp_path / f"new{i}").write_bytes(b"x")
        quota.check()
    assert len(walks) == 1


def test_a_warm_invocation_does_not_walk_the_scratch_dir(functions: list[Function[Any]], walks: list[str]) -> None:
    @handler
    def keep(event: Any, context: LambdaContext) -> str:
        if event.get("files"):
            for i in range(event["files"]):
                (context.tmp / f"f{i}").write_bytes(b"x")
            _backdate(context.tmp)
        return str(context.tmp)

    functions.append(keep)
    path = keep.invoke({"files": 500})
    walks.clear()
    for _ in range(200):
        keep.invoke({})
    assert walks.count(path) <= 2  # (the next check after the first may still find the mtime moved)


def test_a_context_over_quota_is_retired_after_the_invocation_that_wrote(
    functions: list[Function[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lambdify")

    @handler(tmp_mb=1)
    def fill(event: Any, context: LambdaContext) -> Any:
        (context.tmp / f"{event['name']}.bin").write_bytes(b"x" * event["mb"] * MB)
        return [context.cold_start, str(context.tmp)]

    functions.append(fill)
    assert fill.invoke({"name": "a", "mb": 0})[0] is True
    for _ in range(5):
        assert fill.invoke({"name": "a", "mb": 0})[0] is False
    cold, first = fill.invoke({"name": "b", "mb": 2})  # a new file: measured right after
    assert cold is False
    cold, second = fill.invoke({"name": "c", "mb": 0})
    assert cold is True and second != first
    assert "scratch directory holds 2.0 MB, over tmp_mb=1" in caplog.text
    assert "when its context retired" not in caplog.text  # said once, when it was retired for it


def test_growth_the_checks_missed_is_found_and_logged_at_retirement(
    functions: list[Function[Any]], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="lambdify")
    monkeypatch.setattr(scratch, "_REWALK", 3600.0)

    @handler(tmp_mb=1)
    def grow(event: Any, context: LambdaContext) -> Any:
        log = context.tmp / "log.bin"
        if event.get("create"):
            log.touch()
            _backdate(context.tmp)
        else:
            with log.open("ab") as file:
                file.write(b"x" * 2 * MB)
        return context.cold_start

    functions.append(grow)
    assert grow.invoke({"create": True}) is True
    assert grow.invoke({}) is False
    assert grow.invoke({}) is False  # 4 MB, not noticed yet: the directory's top level did not change
    grow.shutdown()
    assert "held 4.0 MB when its context retired, over tmp_mb=1" in caplog.text
