"""A function in process isolation: each execution context is a child process.

At the deadline the child is killed, and `memory_mb` is a hard limit on the child, so a
runaway handler cannot take the server down with it. Run it through the CLI:

echo '{}' | lambdify invoke examples/isolated.py --event -
echo '{"allocate_mb": 400}' | lambdify invoke examples/isolated.py --event -   # Runtime.OutOfMemory
echo '{"sleep": 5}' | lambdify invoke examples/isolated.py --event -           # Sandbox.Timedout
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from lambdify import LambdaContext, handler


# Process isolation needs a module-level handler: the child imports this module itself.
@handler(isolation="process", timeout=2, memory_mb=256)
def isolated(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "allocate_mb" in event:
        # Past memory_mb the allocation fails in the child: the invocation gets Runtime.OutOfMemory.
        ballast = bytearray(event["allocate_mb"] * 1024 * 1024)
        del ballast
    time.sleep(event.get("sleep", 0))  # past `timeout`, the child is killed (SIGKILL)
    return {
        "pid": os.getpid(),  # the child's, not the caller's
        "function_name": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
        "tz": os.environ["TZ"],
        "tmp_is_scratch": tempfile.gettempdir() == str(context.tmp),
        "cold_start": context.cold_start,
    }
