"""Work deferred past the handler's return, finished before the invocation completes.

Run it through the CLI, or as a program that reads the audit line back after `invoke()`:

lambdify invoke examples/deferred.py --event -  <<< '{"order": 42}'
python examples/deferred.py
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lambdify import LambdaContext, handler


def write_audit_line(path: Path, line: str) -> None:
    with path.open("a") as log:
        log.write(line + "\n")


@handler
def place_order(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    audit_log = context.tmp / "audit.log"
    line = f"{time.time():.3f} {context.aws_request_id} order={event.get('order')}"
    # Runs after this function has returned, within the same deadline.
    context.defer(write_audit_line, audit_log, line)
    return {"accepted": True, "audit_log": str(audit_log)}


if __name__ == "__main__":
    result = place_order.invoke({"order": 42})
    # invoke() returns only once deferred work has finished, so the line is already written.
    print(Path(result["audit_log"]).read_text(), end="")
    place_order.shutdown()
