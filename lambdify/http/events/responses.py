"""How API Gateway (v2, v1) and an ALB read a handler's result back into an HTTP response."""

from __future__ import annotations

import base64
import re
from typing import Any, TypedDict

from ...core import marshal as _json
from .shared import BadResponse


class ProxyResponse(TypedDict, total=False):
    """What a handler returns to API Gateway or an ALB."""

    statusCode: int
    statusDescription: str  # ALB only; the reason phrase, which ASGI cannot send
    headers: dict[str, str]
    multiValueHeaders: dict[str, list[str]]
    cookies: list[str]  # v2 only
    body: str | None
    isBase64Encoded: bool


_V1_KEYS = frozenset(("statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"))
# The services compute the length and own the connection (ALB: "does not honor hop-by-hop headers").
_DROPPED = frozenset(("content-length", "connection", "transfer-encoding", "keep-alive"))
# What each service sends when the handler named no content-type.
_OCTETS = b"application/octet-stream"
_DEFAULT_TYPE = {"v2": b"text/plain; charset=utf-8", "v1": b"application/json", "alb": _OCTETS, "alb-multi": _OCTETS}
_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+").fullmatch


# The result reaches the service as JSON, so what json.dumps accepts as an object, array, string
# or number counts as one here (a defaultdict, a tuple, HTTPStatus.OK).
_NAMES: dict[str, str] = {}  # header names found valid -> in lower case (a handler sends a few)


def _name(name: object) -> str:
    if type(name) is str:
        known = _NAMES.get(name)
        if known is not None:
            return known
    if not isinstance(name, str) or not _token(name):
        raise BadResponse(f"invalid header name {name!r}")
    lowered = name.lower()
    if len(_NAMES) < 512:
        _NAMES[name] = lowered
    return lowered


def _value(value: object) -> bytes:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):  # as its JSON text
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = int.__repr__(value)  # as json.dumps writes it, an IntEnum included
    elif isinstance(value, float):
        text = float.__repr__(value)
    else:
        raise BadResponse(f"header value must be a string, not {type(value).__name__}")
    if "\n" in text or "\r" in text or "\0" in text:
        raise BadResponse(f"invalid header value {text!r}")
    return text.encode("utf-8", "replace")


def _structured(event_format: str, result: dict[Any, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    if event_format == "v1":
        for key in result:
            if key not in _V1_KEYS:  # REST: "Malformed Lambda proxy response"
                raise BadResponse(f"unexpected key {key!r} in a REST API proxy response")
    status = result["statusCode"]
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise BadResponse(f"statusCode must be an int from 100 to 599, not {status!r}")

    body = result.get("body")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        raise BadResponse(f"body must be a string, not {type(body).__name__}")
    elif result.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except ValueError:
            raise BadResponse("isBase64Encoded is true but the body is not base64") from None
    else:
        data = body.encode("utf-8", "replace")

    # v2 has no multiValueHeaders; ALB reads only the field of its mode; REST merges both, and
    # for a name in both "only the values from multiValueHeaders" are sent.
    merged: dict[str, list[Any] | tuple[Any, ...]] = {}
    if event_format != "alb-multi" and (single := result.get("headers")) is not None:
        if not isinstance(single, dict):
            raise BadResponse("headers must be an object")
        for name, value in single.items():
            merged[_name(name)] = [value]
    if (event_format == "v1" or event_format == "alb-multi") and (multi := result.get("multiValueHeaders")) is not None:
        if not isinstance(multi, dict):
            raise BadResponse("multiValueHeaders must be an object")
        for name, values in multi.items():
            if values is not None and not isinstance(values, list | tuple):
                raise BadResponse(f"multiValueHeaders[{name!r}] must be a list")
            merged[_name(name)] = values or []
    pairs = [
        (key.encode(), _value(value))
        for key, values in merged.items()
        if key not in _DROPPED
        for value in values
        if value is not None
    ]
    if event_format == "v2":
        cookies = result.get("cookies")
        if cookies is not None:
            if not isinstance(cookies, list | tuple):
                raise BadResponse("cookies must be a list of strings")
            pairs += [(b"set-cookie", _value(cookie)) for cookie in cookies]
    if "content-type" not in merged:  # a null one suppresses the default, as on REST
        pairs.append((b"content-type", _DEFAULT_TYPE[event_format]))
    return int(status), pairs, data


def response_from_result(
    event_format: str, result: Any, *, head: bool = False
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, raw header pairs, body bytes) by API Gateway's / ALB's rules. HEAD → empty body (headers kept).

    ```python
    response_from_result("v2", {"statusCode": 201, "body": "made"})
    # (201, [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"4")], b"made")
    response_from_result("v2", {"message": "hi"})  # 200, application/json, b'{"message": "hi"}'
    ```
    """
    if event_format not in _DEFAULT_TYPE:
        raise ValueError(f"unknown event format {event_format!r}")
    if isinstance(result, dict) and "statusCode" in result:
        status, headers, body = _structured(event_format, result)
    elif event_format == "v2":
        # HTTP API infers a response from anything else: 200, JSON, the result as the body.
        if isinstance(result, str):
            text = result
        else:
            try:
                text = _json.marshal(result).decode("utf-8", "replace")  # the text Lambda's runtime sends
            except (TypeError, ValueError) as exc:
                raise BadResponse(f"the result is not JSON-serialisable: {exc}") from None
        status, headers, body = 200, [(b"content-type", b"application/json")], text.encode("utf-8", "replace")
    else:
        raise BadResponse("the result has no statusCode")
    if status < 200 or status == 204 or status == 304:  # no body allowed, so no length either
        return status, headers, b""
    headers.append((b"content-length", str(len(body)).encode()))
    return status, headers, b"" if head else body
