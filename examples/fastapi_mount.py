"""Lambda functions mounted inside a FastAPI app, next to the app's own routes.

From the repository root, run either of:

uvicorn examples.fastapi_mount:app
python examples/fastapi_mount.py            # the same, on http://127.0.0.1:8000

then:

curl http://127.0.0.1:8000/own                      # the app's own route
curl http://127.0.0.1:8000/lambda/hello/a/b         # `hello`, which sees rawPath "/a/b"
aws lambda invoke --endpoint-url http://127.0.0.1:8000/lambda --function-name add \
    --cli-binary-format raw-in-base64-out --payload '{"a": 1, "b": 2}' out.json
"""

from __future__ import annotations

import sys
from typing import Any

from fastapi import FastAPI

from lambdify import FunctionApp, LambdaContext, handler


@handler(timeout=5)
def hello(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # An HTTP function: the event is an API Gateway HTTP API (payload 2.0) event.
    return {
        "statusCode": 200,
        "headers": {"content-type": "text/plain"},
        "body": f"Hello from {event['rawPath']}",
    }


@handler(timeout=5, provisioned=1)
async def add(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Meant for the Invoke API: the event is the payload the caller sent.
    return {"sum": event["a"] + event["b"], "cold_start": context.cold_start}


functions = FunctionApp([hello, add])

# A mounted app gets no lifespan events of its own: hand them over, so that provisioned
# contexts start with the server and queued Event invocations finish before it exits.
app = FastAPI(lifespan=functions.lifespan)


@app.get("/own")
async def own() -> dict[str, str]:
    return {"route": "own"}


app.mount("/lambda", functions)  # GET /lambda/hello/..., POST /lambda/2015-03-31/functions/add/invocations


if __name__ == "__main__":
    import uvicorn

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    uvicorn.run(app, host="127.0.0.1", port=port)
