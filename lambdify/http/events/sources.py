"""Which AWS service sent a Lambda event: the HTTP sources that `lambda_handler` serves, and a
name for every other one (so that an unhandled event fails with a message, never a `KeyError`).

Detection reads the event's shape, as the services document it, once per event:

- `"v2"`: API Gateway HTTP API payload 2.0, and Lambda Function URLs (the same format);
- `"v1"`: API Gateway REST API proxy integration (and HTTP API payload 1.0);
- `"alb"` / `"alb-multi"`: an Application Load Balancer target group, multi-value headers off / on.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["describe_event", "http_source"]


def http_source(event: Any) -> str | None:
    """`"v2"`, `"v1"`, `"alb"` or `"alb-multi"` for an HTTP event; None for anything else.

    ```python
    http_source({"version": "2.0", "requestContext": {"http": {...}}, ...})   # "v2"
    http_source({"Records": [{"eventSource": "aws:sqs", ...}]})              # None
    ```
    """
    if not isinstance(event, dict):
        return None
    context = event.get("requestContext")
    if not isinstance(context, dict):
        return None
    if "http" in context and event.get("version") == "2.0":
        return "v2"
    if "httpMethod" in event:
        if "elb" in context:
            return "alb-multi" if "multiValueHeaders" in event else "alb"
        return "v1"
    return None


_RECORD_SOURCES: Final = {
    "aws:sqs": "SQS",
    "aws:s3": "S3",
    "aws:sns": "SNS",
    "aws:dynamodb": "DynamoDB Streams",
    "aws:kinesis": "Kinesis",
    "aws:kafka": "Amazon MSK",
    "SelfManagedKafka": "self-managed Kafka",
    "aws:mq": "Amazon MQ",
    "aws:rmq": "Amazon MQ (RabbitMQ)",
    "aws:ses": "SES",
    "aws:codecommit": "CodeCommit",
}


def describe_event(event: Any) -> str:
    """A short name of the service that sent a (non-HTTP) event, for messages.

    ```python
    describe_event({"Records": [{"eventSource": "aws:sqs"}]})  # "an SQS event (Records[0].eventSource 'aws:sqs')"
    ```
    """
    if not isinstance(event, dict):
        return f"a {type(event).__name__} event"
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        first = records[0]
        key = "eventSource" if "eventSource" in first else "EventSource"
        source = first.get(key)
        name = _RECORD_SOURCES.get(source) if isinstance(source, str) else None
        if name is not None:
            article = "an" if name[0] in "AEIOS" else "a"  # (an SQS, an S3, a Kinesis)
            return f"{article} {name} event (Records[0].{key} {source!r})"
        return f"a Records event (Records[0].{key} {source!r})"
    if "detail-type" in event and "source" in event:
        if event.get("detail-type") == "Scheduled Event":
            return "an EventBridge schedule event (detail-type 'Scheduled Event')"
        return f"an EventBridge event (source {event.get('source')!r}, detail-type {event.get('detail-type')!r})"
    context = event.get("requestContext")
    if isinstance(context, dict) and "eventType" in context and "routeKey" in context:
        return f"an API Gateway WebSocket event (eventType {context.get('eventType')!r})"
    if "awslogs" in event:
        return "a CloudWatch Logs event (awslogs)"
    if "triggerSource" in event and "userPoolId" in event:
        return f"a Cognito user pool event (triggerSource {event.get('triggerSource')!r})"
    if "RequestType" in event and "ResponseURL" in event:
        return f"a CloudFormation custom resource event (RequestType {event.get('RequestType')!r})"
    keys = ", ".join(sorted(map(str, event))[:8]) or "none"
    return f"an event of no known source (top-level keys: {keys})"
