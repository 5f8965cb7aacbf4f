"""An existing FastAPI app, wrapped: every request is an invocation on a warm execution context.

From the repository root:

uvicorn examples.fastapi_wrap:app

then:

curl http://127.0.0.1:8000/                 # the LambdaContext, and the shared HTTP client
curl -X POST http://127.0.0.1:8000/orders    # answered at once; the audit line is written after
curl http://127.0.0.1:8000/audit             # the audit lines written so far
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import httpx
from fastapi import BackgroundTasks, Depends, FastAPI

from lambdify import ASGIMiddleware, ExecutionContext, LambdaContext
from lambdify.http.dependencies import lambda_context


def setup(ctx: ExecutionContext) -> None:
    """INIT: runs once per execution context. Under ASGIMiddleware a worker keeps one context,
    shared by concurrent requests, so its resources must be safe to share: an httpx.AsyncClient is."""
    ctx.resources.add("http", lambda: httpx.AsyncClient(timeout=5), check=lambda client: not client.is_closed)
    ctx.state.audit = []


# The LambdaContext of the current request, as a FastAPI dependency.
Context = Annotated[LambdaContext, Depends(lambda_context)]

app = FastAPI()
app.add_middleware(ASGIMiddleware, timeout=10, init=setup)


@app.get("/")
async def index(context: Context) -> dict[str, Any]:
    client = context.resources["http"]  # made on first use, then reused warm
    return {
        "request_id": context.aws_request_id,
        "cold_start": context.cold_start,
        "ms_left": context.get_remaining_time_in_millis(),
        "client": id(client),
    }


async def write_audit(context: LambdaContext, line: str) -> None:
    await asyncio.sleep(1)  # slow work the client need not wait for
    context.execution.state.audit.append(line)


@app.post("/orders")
async def place_order(background: BackgroundTasks, context: Context) -> dict[str, Any]:
    # The response goes first; the task then runs within the same deadline, and the
    # invocation (and its context) is finished only when it is done.
    background.add_task(write_audit, context, f"order placed by {context.aws_request_id}")
    return {"accepted": True, "request_id": context.aws_request_id}


@app.get("/audit")
async def audit(context: Context) -> list[str]:
    return list(context.execution.state.audit)
