"""Real-shaped Lambda events for the `lambda_handler` tests, each validated by AWS Lambda
Powertools' parser models (so the test data is what the services send)."""

from __future__ import annotations

import copy
from typing import Any

from aws_lambda_powertools.utilities.parser.models import (
    AlbModel,
    APIGatewayProxyEventModel,
    APIGatewayProxyEventV2Model,
    LambdaFunctionUrlModel,
    SqsModel,
)

from lambdify.http.events import request_event


class _AlbMultiValueModel(AlbModel):
    # Powertools' AlbModel requires the single-value fields, which ALB leaves out in multi-value mode.
    headers: dict[str, str] | None = None  # type: ignore[assignment]
    queryStringParameters: dict[str, str] | None = None  # type: ignore[assignment]
    multiValueHeaders: dict[str, list[str]]
    multiValueQueryStringParameters: dict[str, list[str]]


HTTP_SOURCES = ("v2", "v1", "alb", "alb-multi", "url")
_MODELS: dict[str, Any] = {
    "v2": APIGatewayProxyEventV2Model,
    "url": LambdaFunctionUrlModel,
    "v1": APIGatewayProxyEventModel,
    "alb": AlbModel,
    "alb-multi": _AlbMultiValueModel,
}


def http_event(
    source: str,
    method: str = "GET",
    path: str = "/",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> dict[str, Any]:
    """The event `source` sends for this request ("url": a Function URL), checked by Powertools."""
    raw = [(b"host", b"abc123.execute-api.us-east-1.amazonaws.com"), *(headers or [])]
    event_format = "v2" if source == "url" else source
    event = request_event(
        event_format,
        method=method,
        raw_path=path,
        query_string=query,
        headers=raw,
        body=body,
        source_ip="203.0.113.7",
        protocol="HTTP/1.1",
        request_id="req-" + source,
    )
    if source == "url":  # a Function URL: payload 2.0 with the URL's own domain and no stage
        domain = "abcdefghij.lambda-url.us-east-1.on.aws"
        event["headers"]["host"] = domain
        context = event["requestContext"]
        context.update(domain=domain, domainName=domain, domainPrefix="abcdefghij", apiId="abcdefghij")
        del context["domain"]
    _MODELS[source].model_validate(copy.deepcopy(event))
    return event


SQS_EVENT: dict[str, Any] = {
    "Records": [
        {
            "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
            "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
            "body": "test",
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1545082649183",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": "1545082649185",
            },
            "messageAttributes": {},
            "md5OfBody": "098f6bcd4621d373cade4e832627b4f6",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
            "awsRegion": "us-east-2",
        }
    ]
}
SqsModel.model_validate(copy.deepcopy(SQS_EVENT))
