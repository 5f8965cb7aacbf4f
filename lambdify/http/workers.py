"""Every worker's contexts on the status page, whichever worker answers (`lambdify serve --workers N`).

Each worker publishes its snapshot (`lambdify.stats()` with log lines) as a small JSON file
`<pid>.json` under a private run directory (`LAMBDIFY_STATUS_DIR`, made by `serve`), rewritten at
most `PUBLISH_EVERY` seconds apart and only when it changed; the worker that answers a status
request merges the others' files with its own live snapshot. The file of a worker that is gone
(no such process) is deleted when seen; a worker removes its own when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any, Final

from ..core.engine import COUNTERS

__all__ = ["ENV", "Publisher", "merge", "others"]

ENV: Final = "LAMBDIFY_STATUS_DIR"
PUBLISH_EVERY: Final = 0.25
_SUMMED: Final = (*COUNTERS, "contexts_alive", "abandoned_threads_alive")
_RECENT: Final = 50


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process took the pid
        return False
    return True


def others(folder: str) -> list[dict[str, Any]]:
    """The snapshots the other live workers published; files of dead workers are deleted."""
    found = []
    me = os.getpid()
    for path in Path(folder).glob("*.json"):
        try:
            pid = int(path.stem)
        except ValueError:
            continue
        if pid == me:
            continue
        if not _alive(pid):
            path.unlink(missing_ok=True)
            continue
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # (replaced meanwhile: the next poll reads the new one)
    return found


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report of several workers' snapshots: counters and histograms summed, contexts and
    recent invocations put together (each entry names its worker's `pid`)."""
    merged: dict[str, Any] = {}
    for report in reports:
        for name, entry in report.items():
            into = merged.get(name)
            if into is None:
                merged[name] = into = json.loads(json.dumps(entry))  # (a copy: the first is kept as is)
                continue
            for key in _SUMMED:
                into[key] = into.get(key, 0) + entry.get(key, 0)
            if entry.get("init_ms_last") is not None:
                into["init_ms_last"] = entry["init_ms_last"]
            into["contexts"] = into["contexts"] + entry["contexts"]
            recent = into["recent"] + entry["recent"]
            into["recent"] = sorted(recent, key=lambda item: item["start"], reverse=True)[:_RECENT]
            latency, other = into["latency"], entry["latency"]
            latency["counts"] = [a + b for a, b in zip(latency["counts"], other["counts"], strict=True)]
            latency["sum_ms"] = round(latency["sum_ms"] + other["sum_ms"], 3)
    return merged


class Publisher:
    """Writes this worker's snapshot to `<folder>/<pid>.json` while its event loop runs."""

    def __init__(self, folder: str, snapshot: Any) -> None:
        self.folder = folder
        self.snapshot = snapshot
        self.path = Path(folder) / f"{os.getpid()}.json"
        self.task: asyncio.Task[None] | None = None
        self.last = ""

    def start(self) -> None:
        if self.task is None:
            self.path = Path(self.folder) / f"{os.getpid()}.json"  # (a forked worker: its own pid)
            self.task = asyncio.get_running_loop().create_task(self._run())

    def publish(self) -> None:
        text = json.dumps(self.snapshot())
        if text != self.last:
            scratch = self.path.with_suffix(".tmp")
            scratch.write_text(text, encoding="utf-8")
            os.replace(scratch, self.path)  # readers see the old file or the new one, never half of one
            self.last = text

    async def _run(self) -> None:
        while True:
            try:
                self.publish()
            except OSError:  # pragma: no cover - the run directory went away (serve is stopping)
                return
            await asyncio.sleep(PUBLISH_EVERY)

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.path.unlink(missing_ok=True)
