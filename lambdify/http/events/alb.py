"""Application Load Balancer events, multi-value headers off (`"alb"`) or on (`"alb-multi"`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

from .shared import (
    ACCOUNT_ID,
    _encode_body,
    _headers,
    _query,
    _Raw,
)

if TYPE_CHECKING:

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
