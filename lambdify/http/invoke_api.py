"""The Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`), for boto3 and the AWS CLI.

Status codes, headers and error types follow the real service so that botocore parses them:
errors carry `x-amzn-ErrorType` and a `{"Type", "message"}` body; function errors are a 200
with `X-Amz-Function-Error: Unhandled` and Lambda's error payload.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, unquote

from ..core.config import function_arn
from ..core.current import new_request_id
from ..core.errors import FunctionError, TooManyRequests
from ..core.invoke_async import run_async
from ..core.logs import capture, tail
from .event_queue import EventQueue
from .function_asgi import MAX_SYNC_PAYLOAD, _Disconnected, _TooLarge, read_body, send_json

if TYPE_CHECKING:
    from ..core.engine import Engine
    from .types import Receive, Scope, Send

PREFIX: Final = "/2015-03-31/functions/"
MAX_EVENT_PAYLOAD: Final = 1024 * 1024
INVOCATION_TYPES: Final = ("RequestResponse", "Event", "DryRun")
_VERSION: Final = (b"x-amz-executed-version", b"$LATEST")


def function_name(reference: str) -> tuple[str, str | None]:
    """A name, partial ARN (`123456789012:function:name`) or full ARN, with an optional `:qualifier`."""
    parts = reference.split(":")
    if reference.startswith("arn:") and len(parts) >= 7:
        return parts[6], parts[7] if len(parts) > 7 else None
    if len(parts) >= 3 and parts[1] == "function":
        return parts[2], parts[3] if len(parts) > 3 else None
    return parts[0], parts[1] if len(parts) > 1 else None


async def _error(send: Send, status: int, error_type: str, message: str, request_id: str) -> None:
    headers = [(b"x-amzn-errortype", error_type.encode()), (b"x-amzn-requestid", request_id.encode())]
    await send_json(send, status, {"Type": "User", "message": message}, headers)


async def serve_invoke(
    functions: Mapping[str, Engine], queue: EventQueue, scope: Scope, receive: Receive, send: Send, rest: str
) -> None:
    """Serve `POST {PREFIX}{name}/invocations`; `rest` is the part after PREFIX (raw)."""
    request_id = new_request_id()
    reference, _, tail_path = rest.partition("/")
    if scope["method"] != "POST" or tail_path != "invocations":
        await _error(send, 404, "ResourceNotFoundException", "Unknown operation", request_id)
        return
    kind, log_type = "RequestResponse", ""
    for name, value in scope["headers"]:
        if name == b"x-amz-invocation-type":
            kind = value.decode("latin-1") or kind
        elif name == b"x-amz-log-type":
            log_type = value.decode("latin-1")
    if kind not in INVOCATION_TYPES:
        message = f"Invalid invocation type {kind!r}: expected one of {', '.join(INVOCATION_TYPES)}"
        await _error(send, 400, "InvalidParameterValueException", message, request_id)
        return
    name, _qualifier = function_name(unquote(reference))
    qualifier = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("Qualifier")
    function = functions.get(name)
    if function is None:
        target = function_arn(name) + (f":{qualifier[0]}" if qualifier else "")
        await _error(send, 404, "ResourceNotFoundException", f"Function not found: {target}", request_id)
        return
    limit = MAX_EVENT_PAYLOAD if kind == "Event" else MAX_SYNC_PAYLOAD
    try:
        body = await read_body(scope, receive, limit)
    except _TooLarge:
        message = f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
        await _error(send, 413, "RequestTooLargeException", message, request_id)
        return
    except _Disconnected:
        return
    try:
        event = json.loads(body) if body.strip() else {}
    except ValueError as exc:
        message = f"Could not parse request body into json: {exc}"
        await _error(send, 400, "InvalidRequestContentException", message, request_id)
        return
    ids = [(b"x-amzn-requestid", request_id.encode())]
    if kind == "DryRun":
        await send({"type": "http.response.start", "status": 204, "headers": ids})
        await send({"type": "http.response.body", "body": b""})
    elif kind == "Event":
        if not queue.submit(function, event, request_id):
            message = f"Rate Exceeded: {queue.max_queued} Event invocations are already queued"
            await _error(send, 429, "TooManyRequestsException", message, request_id)
            return
        await send({"type": "http.response.start", "status": 202, "headers": ids})
        await send({"type": "http.response.body", "body": b""})
    else:
        await _request_response(function, event, request_id, log_type == "Tail", send)


async def _request_response(function: Engine, event: Any, request_id: str, want_tail: bool, send: Send) -> None:
    ids = [(b"x-amzn-requestid", request_id.encode()), _VERSION]
    sent = False

    async def ready(result: Any, failure: FunctionError | None) -> None:
        nonlocal sent
        sent = True
        await _send_outcome(send, ids, result, failure, None)

    log: list[str] | None = [] if want_tail else None
    try:
        if want_tail:
            # With Tail the log must hold END and REPORT, so the answer waits for the flush. What
            # the handler prints or logs is copied into it while it runs (and only then).
            with capture:
                result = await run_async(function, event, request_id, log=log)
        else:
            result = await run_async(function, event, request_id, on_ready=ready)
    except TooManyRequests as exc:
        await _error(send, 429, "TooManyRequestsException", f"Rate Exceeded. {exc}", request_id)
    except FunctionError as failure:
        if not sent:
            await _send_outcome(send, ids, None, failure, log)
    else:
        if not sent:
            await _send_outcome(send, ids, result, None, log)


async def _send_outcome(
    send: Send, ids: list[tuple[bytes, bytes]], result: Any, failure: FunctionError | None, log: list[str] | None
) -> None:
    headers = list(ids)
    if log is not None:
        headers.append((b"x-amz-log-result", base64.b64encode(tail(log))))
    if failure is not None:
        headers.append((b"x-amz-function-error", b"Unhandled"))
        await send_json(send, 200, failure.to_payload(), headers)
    else:
        await send_json(send, 200, result, headers)
