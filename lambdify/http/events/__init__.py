"""HTTP ⇄ Lambda event codecs: the event API Gateway or an ALB builds, and how it reads the result.

Request shapes (`event_format`):

- `"v2"`: API Gateway HTTP API, payload format 2.0 (also what Lambda Function URLs send).
  `rawPath`/`rawQueryString` are exactly as received; repeated headers and query keys are
  joined with `,`; the `Cookie` header moves to `cookies`.
- `"v1"`: API Gateway REST API proxy integration. `headers`/`queryStringParameters` keep the
  last value of a repeated name, `multiValueHeaders`/`multiValueQueryStringParameters` all of them.
- `"alb"` / `"alb-multi"`: an Application Load Balancer target group with multi-value headers
  off (last value wins) or on (only the `multiValue*` fields). ALB decodes neither the path
  nor the query.

A request body is sent as text when its content type is textual and it is valid UTF-8,
otherwise base64-encoded with `isBase64Encoded: true`.

The handler's result maps back by the same service's rules (`response_from_result`):
`statusCode`, `headers`, `multiValueHeaders` (v1 merges both; ALB reads the one its mode
uses; v2 has none), `cookies` (v2 only), `body`, `isBase64Encoded`. On v2 a result that is
not a dict with `statusCode` is sent as 200 JSON. Anything the service would answer with
502 raises `BadResponse`. `content-length` is computed here, as the services do.

Pure functions, stdlib only: this runs for every HTTP request.
"""

from __future__ import annotations

import time
from typing import Any

from .alb import _alb
from .responses import ProxyResponse, response_from_result
from .shared import BadResponse
from .v1 import _v1
from .v2 import _v2

__all__ = ["BadResponse", "ProxyResponse", "request_event", "response_from_result"]


def request_event(
    event_format: str,
    *,
    method: str,
    raw_path: str,
    query_string: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    source_ip: str,
    protocol: str,
    request_id: str,
    stage: str = "$default",
    function_name: str = "fn",
    now: float | None = None,
) -> dict[str, Any]:
    """The event API Gateway (`"v2"`, `"v1"`) or an ALB (`"alb"`, `"alb-multi"`) would send for this request.

    ```python
    event = request_event("v2", method="GET", raw_path="/a%20b", query_string=b"x=1", headers=[],
                          body=b"", source_ip="127.0.0.1", protocol="HTTP/1.1", request_id="id")
    event["rawPath"], event["requestContext"]["http"]["path"]  # "/a%20b", "/a b"
    ```
    """
    if now is None:
        now = time.time()
    qs = query_string.decode("latin-1")
    if event_format == "v2":
        return _v2(method, raw_path, qs, headers, body, source_ip, protocol, request_id, stage, now)
    if event_format == "v1":
        return _v1(method, raw_path, qs, headers, body, source_ip, protocol, request_id, stage, now)
    if event_format == "alb" or event_format == "alb-multi":
        return _alb(event_format == "alb-multi", method, raw_path, qs, headers, body, function_name)
    raise ValueError(f"unknown event format {event_format!r}")
