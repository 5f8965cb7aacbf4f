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

import base64
import os
import re
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast
from urllib.parse import unquote, unquote_plus

from ..core import marshal as _json
from ..core.errors import LambdifyError

__all__ = ["BadResponse", "ProxyResponse", "request_event", "response_from_result"]

ACCOUNT_ID = "000000000000"  # the same fake account as Function.arn
API_ID = "lambdify00"
_RESOURCE_ID = "proxy0"
_Raw = list[tuple[bytes, bytes]]


class BadResponse(LambdifyError):
    """The handler's result cannot be mapped to an HTTP response (API Gateway answers 502)."""


if TYPE_CHECKING:  # the events' shapes; building TypedDicts at runtime would cost ~1 ms of import

    class HTTPContext(TypedDict):
        method: str
        path: str
        protocol: str
        sourceIp: str
        userAgent: str

    class V2RequestContext(TypedDict):
        accountId: str
        apiId: str
        domainName: str
        domainPrefix: str
        http: HTTPContext
        requestId: str
        routeKey: str
        stage: str
        time: str
        timeEpoch: int

    class V2Event(TypedDict):
        version: str
        routeKey: str
        rawPath: str
        rawQueryString: str
        cookies: NotRequired[list[str]]
        headers: dict[str, str]
        queryStringParameters: NotRequired[dict[str, str]]
        requestContext: V2RequestContext
        body: NotRequired[str]
        isBase64Encoded: bool

    class V1RequestContext(TypedDict):
        accountId: str
        apiId: str
        domainName: str
        domainPrefix: str
        extendedRequestId: str
        httpMethod: str
        identity: dict[str, str | None]
        path: str
        protocol: str
        requestId: str
        requestTime: str
        requestTimeEpoch: int
        resourceId: str
        resourcePath: str
        stage: str

    class V1Event(TypedDict):
        resource: str
        path: str
        httpMethod: str
        headers: dict[str, str]
        multiValueHeaders: dict[str, list[str]]
        queryStringParameters: dict[str, str] | None
        multiValueQueryStringParameters: dict[str, list[str]] | None
        pathParameters: dict[str, str] | None
        stageVariables: None
        requestContext: V1RequestContext
        body: str | None
        isBase64Encoded: bool

    class ALBEvent(TypedDict):
        requestContext: dict[str, dict[str, str]]
        httpMethod: str
        path: str
        queryStringParameters: NotRequired[dict[str, str]]
        multiValueQueryStringParameters: NotRequired[dict[str, list[str]]]
        headers: NotRequired[dict[str, str]]
        multiValueHeaders: NotRequired[dict[str, list[str]]]
        body: str
        isBase64Encoded: bool


class ProxyResponse(TypedDict, total=False):
    """What a handler returns to API Gateway or an ALB."""

    statusCode: int
    statusDescription: str  # ALB only; the reason phrase, which ASGI cannot send
    headers: dict[str, str]
    multiValueHeaders: dict[str, list[str]]
    cookies: list[str]  # v2 only
    body: str | None
    isBase64Encoded: bool


# --- requests ---------------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_clock: tuple[int, str] = (-1, "")  # (second, its CLF text): many requests share a second


def _clf_time(now: float) -> str:
    """`12/Mar/2020:19:03:58 +0000`, API Gateway's `time`/`requestTime`, in English whatever the locale."""
    global _clock
    second = int(now)
    cached = _clock
    if cached[0] == second:
        return cached[1]
    t = time.gmtime(second)
    text = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    _clock = (second, text)
    return text


def _domain(host: str | None) -> tuple[str, str]:
    """(domainName, domainPrefix) from the Host header; AWS's never carry a port."""
    host = host or "localhost"
    if ":" in host and host[-1] != "]":  # not a bare "[::1]"
        host = host.rpartition(":")[0]
    return host, host.partition(".")[0]


def _is_text(content_type: str | None, alb: bool) -> bool:
    mime = content_type.partition(";")[0].strip().lower() if content_type else ""
    if not mime or mime.startswith("text/"):
        return True
    if alb:  # ALB's documented list, nothing else
        return mime in ("application/json", "application/javascript", "application/xml")
    return mime.endswith(("/json", "+json", "/xml", "+xml", "/x-www-form-urlencoded")) or "javascript" in mime


def _encode_body(body: bytes, content_type: str | None, alb: bool = False) -> tuple[str, bool]:
    if _is_text(content_type, alb):
        try:
            return body.decode(), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def _query(qs: str, decode: bool) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(last value of each key, all values of each key). API Gateway decodes `+` and `%XX`; ALB nothing."""
    return _last_and_every(_query_pairs(qs, decode))


def _query_pairs(qs: str, decode: bool) -> Iterator[tuple[str, str]]:
    for piece in qs.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        if decode and ("%" in piece or "+" in piece):
            key, value = unquote_plus(key), unquote_plus(value)
        yield key, value


def _headers(raw: _Raw) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(last value of each header, all values of each header)."""
    return _last_and_every((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw)


def _last_and_every(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(the last value of each key, all values of each key, in order)."""
    last: dict[str, str] = {}
    every: dict[str, list[str]] = {}
    for key, value in pairs:
        last[key] = value
        if key in every:
            every[key].append(value)
        else:
            every[key] = [value]
    return last, every


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


def _v2(
    method: str, raw_path: str, qs: str, raw: _Raw, body: bytes, ip: str, proto: str, rid: str, stage: str, now: float
) -> dict[str, Any]:
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, raw_value in raw:
        value = raw_value.decode("latin-1")
        if raw_name == b"cookie":  # HTTP API moves cookies out of `headers`
            cookies += value.split("; ")
            continue
        name = raw_name.decode("latin-1")
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous},{value}"
    domain, prefix = _domain(headers.get("host"))
    event: V2Event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": qs,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": domain,
            "domainPrefix": prefix,
            "http": {
                "method": method,
                "path": unquote(raw_path) if "%" in raw_path else raw_path,
                "protocol": proto,
                "sourceIp": ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": rid,
            "routeKey": "$default",
            "stage": stage,
            "time": _clf_time(now),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if qs:
        event["queryStringParameters"] = {key: ",".join(values) for key, values in _query(qs, True)[1].items()}
    if body:
        event["body"], event["isBase64Encoded"] = _encode_body(body, headers.get("content-type"))
    return cast("dict[str, Any]", event)


# REST's caller identity: with no authorizer, API key or client certificate, all null but these two.
_NO_IDENTITY: dict[str, str | None] = dict.fromkeys(
    "accessKey accountId apiKey apiKeyId caller cognitoAuthenticationProvider cognitoAuthenticationType"
    " cognitoIdentityId cognitoIdentityPoolId principalOrgId user userArn".split()
)


def _v1(
    method: str, raw_path: str, qs: str, raw: _Raw, body: bytes, ip: str, proto: str, rid: str, stage: str, now: float
) -> dict[str, Any]:
    headers, multi_headers = _headers(raw)
    path = unquote(raw_path) if "%" in raw_path else raw_path
    # "/{proxy+}" needs at least one segment: on REST, "/" is served by the root resource.
    resource = "/" if path == "/" else "/{proxy+}"
    query, multi_query = _query(qs, True) if qs else (None, None)
    domain, prefix = _domain(headers.get("host"))
    text, b64 = _encode_body(body, headers.get("content-type")) if body else (None, False)
    event: V1Event = {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None if resource == "/" else {"proxy": path[1:]},
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": domain,
            "domainPrefix": prefix,
            "extendedRequestId": rid,
            "httpMethod": method,
            "identity": {**_NO_IDENTITY, "sourceIp": ip, "userAgent": headers.get("user-agent")},
            # On the execute-api domain, REST's context path starts with the stage.
            "path": path if stage == "$default" else f"/{stage}{path}",
            "protocol": proto,
            "requestId": rid,
            "requestTime": _clf_time(now),
            "requestTimeEpoch": int(now * 1000),
            "resourceId": _RESOURCE_ID,
            "resourcePath": resource,
            "stage": stage,
        },
        "body": text,
        "isBase64Encoded": b64,
    }
    return cast("dict[str, Any]", event)


def _alb(multi: bool, method: str, raw_path: str, qs: str, raw: _Raw, body: bytes, name: str) -> dict[str, Any]:
    region = os.environ.get("AWS_REGION", "us-east-1")
    arn = f"arn:aws:elasticloadbalancing:{region}:{ACCOUNT_ID}:targetgroup/{name[:32]}/0123456789abcdef"
    headers, multi_headers = _headers(raw)
    query, multi_query = _query(qs, False)
    text, b64 = _encode_body(body, headers.get("content-type"), alb=True) if body else ("", False)
    event: ALBEvent = {
        "requestContext": {"elb": {"targetGroupArn": arn}},
        "httpMethod": method,
        "path": raw_path,
        "body": text,
        "isBase64Encoded": b64,
    }
    # The target group's mode picks the field names; the other pair is absent, not empty.
    if multi:
        event["multiValueQueryStringParameters"] = multi_query
        event["multiValueHeaders"] = multi_headers
    else:
        event["queryStringParameters"] = query
        event["headers"] = headers
    return cast("dict[str, Any]", event)


# --- responses --------------------------------------------------------------------------------

_V1_KEYS = frozenset(("statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"))
# The services compute the length and own the connection (ALB: "does not honor hop-by-hop headers").
_DROPPED = frozenset(("content-length", "connection", "transfer-encoding", "keep-alive"))
# What each service sends when the handler named no content-type.
_OCTETS = b"application/octet-stream"
_DEFAULT_TYPE = {"v2": b"text/plain; charset=utf-8", "v1": b"application/json", "alb": _OCTETS, "alb-multi": _OCTETS}
_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+").fullmatch


# The result reaches the service as JSON, so what json.dumps accepts as an object, array, string
# or number counts as one here (a defaultdict, a tuple, HTTPStatus.OK).
def _name(name: object) -> str:
    if not isinstance(name, str) or not _token(name):
        raise BadResponse(f"invalid header name {name!r}")
    return name.lower()


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
