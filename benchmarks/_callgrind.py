"""Shared by the `*_instructions.py` benchmarks: run a Python script under callgrind and read the
instructions it counted. Not a benchmark itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile


def instructions(script: str, *args: str, toggle: str | None = None) -> int:
    """Instructions callgrind counts while `python script *args` runs, with `PYTHONHASHSEED=0`;
    with `toggle`, only those inside that C function (`map_next`: a `map()` the script drains)."""
    fd, out = tempfile.mkstemp(prefix="callgrind.", suffix=".out")
    os.close(fd)
    try:
        subprocess.run(
            ["valgrind", "--tool=callgrind", *([f"--toggle-collect={toggle}"] if toggle else []),
             f"--callgrind-out-file={out}", sys.executable, script, *args],
            check=True, env={**os.environ, "PYTHONHASHSEED": "0"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        with open(out) as f:
            return int(re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M).group(1))  # type: ignore[union-attr]
    finally:
        os.remove(out)
