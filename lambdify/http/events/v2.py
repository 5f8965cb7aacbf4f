"""API Gateway HTTP API events, payload format 2.0 (also what Lambda Function URLs send)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast
from urllib.parse import unquote

from .shared import (
    ACCOUNT_ID,
    API_ID,
    _clf_time,
    _domain,
    _encode_body,
    _query,
    _Raw,
)

if TYPE_CHECKING:

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
