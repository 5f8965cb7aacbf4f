"""API Gateway REST API events (proxy integration, payload format 1.0)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict, cast
from urllib.parse import unquote

from .shared import (
    _RESOURCE_ID,
    ACCOUNT_ID,
    API_ID,
    _clf_time,
    _domain,
    _encode_body,
    _headers,
    _query,
    _Raw,
)

if TYPE_CHECKING:

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
