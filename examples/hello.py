"""The smallest lambdify function.

Run it once through the CLI, or as a program to see a cold start, then a warm one:

lambdify invoke examples/hello.py --event examples/hello-event.json
python examples/hello.py
"""

from __future__ import annotations

import json
from typing import Any

from lambdify import LambdaContext, handler


@handler
def hello(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Invoked directly the event is {"name": ...}; served over HTTP it is an API Gateway event,
    # so `GET /hello/?name=Ada` works too.
    query = event.get("queryStringParameters") or {}
    return {
        "message": f"Hello, {event.get('name') or query.get('name', 'world')}!",
        "request_id": context.aws_request_id,
        "cold_start": context.cold_start,
    }


if __name__ == "__main__":
    # Two invocations in one process: the first is a cold start, the second reuses the warm context.
    for _ in range(2):
        print(json.dumps(hello.invoke({"name": "Ada"})))
    hello.shutdown()
