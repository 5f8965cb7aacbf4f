"""Lambda HTTP events read into ASGI scopes / WSGI environs, and responses written back as
results, for every source (`lambdify.http.events.scope`, `.environ`, `.result`, `.sources`)."""

from __future__ import annotations

import base64

import pytest
from lambda_events import HTTP_SOURCES, SQS_EVENT, http_event

from lambdify.http.events import response_from_result
from lambdify.http.events.environ import wsgi_environ
from lambdify.http.events.result import lambda_result
from lambdify.http.events.scope import asgi_scope
from lambdify.http.events.sources import describe_event, http_source

BINARY = bytes(range(256))


@pytest.mark.parametrize("source", HTTP_SOURCES)
def test_source_is_detected(source: str) -> None:
    expected = "v2" if source == "url" else source
    assert http_source(http_event(source)) == expected


@pytest.mark.parametrize(
    ("event", "name"),
    [
        (SQS_EVENT, "an SQS event"),
        ({"Records": [{"eventSource": "aws:s3"}]}, "an S3 event"),
        ({"Records": [{"EventSource": "aws:sns"}]}, "an SNS event"),
        ({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, "an EventBridge schedule event"),
        ({"source": "my.app", "detail-type": "Order placed", "detail": {}}, "an EventBridge event"),
        ({"hello": 1}, "an event of no known source (top-level keys: hello)"),
        ([1, 2], "a list event"),
    ],
    ids=["sqs", "s3", "sns", "schedule", "eventbridge", "unknown", "list"],
)
def test_other_events_are_named(event: object, name: str) -> None:
    assert http_source(event) is None
    assert describe_event(event).startswith(name)


@pytest.mark.parametrize("source", HTTP_SOURCES)
def test_scope_round_trips_the_request(source: str) -> None:
    headers = [
        (b"x-many", b"1"),
        (b"x-many", b"2"),
        (b"cookie", b"a=1; b=2"),
        (b"content-type", b"application/octet-stream"),
    ]
    event = http_event(source, "POST", "/caf%C3%A9/x", b"q=1&q=2&s=a%20b", headers, BINARY)
    source = "v2" if source == "url" else source
    scope, body = asgi_scope(source, event)
    assert body == BINARY
    assert scope["type"] == "http" and scope["method"] == "POST"
    assert scope["path"] == "/café/x"
    assert scope["raw_path"] == b"/caf%C3%A9/x"
    from urllib.parse import parse_qsl

    query = parse_qsl(scope["query_string"].decode())
    # (a single-value ALB target group passes the last value of a repeated key)
    assert query == ([("q", "2"), ("s", "a b")] if source == "alb" else [("q", "1"), ("q", "2"), ("s", "a b")])
    got = {}
    for name, value in scope["headers"]:
        got.setdefault(name, []).append(value)
    if source in ("v1", "alb-multi"):  # the sources that keep every value of a repeated header
        assert got[b"x-many"] == [b"1", b"2"]
    elif source == "v2":
        assert got[b"x-many"] == [b"1,2"]
    else:  # single-value ALB keeps the last
        assert got[b"x-many"] == [b"2"]
    assert b"; ".join(got[b"cookie"]) == b"a=1; b=2"
    assert scope["scheme"] == "https"
    if source != "alb":
        assert scope["client"] == ("203.0.113.7", 0) or source.startswith("alb")

    environ = wsgi_environ(scope, body)
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["PATH_INFO"] == "/café/x".encode().decode("latin-1")
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert environ["CONTENT_TYPE"] == "application/octet-stream"
    assert environ["wsgi.input"].read() == BINARY
    assert environ["CONTENT_LENGTH"] == "256"


def test_text_body_and_empty_body() -> None:
    event = http_event("v2", "POST", "/", b"", [(b"content-type", b"application/json")], b'{"a": "\xc3\xa9"}')
    assert event["isBase64Encoded"] is False
    assert asgi_scope("v2", event)[1] == b'{"a": "\xc3\xa9"}'
    assert asgi_scope("v1", http_event("v1"))[1] == b""


RESPONSE_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"x-many", b"1"),
    (b"x-many", b"2"),
    (b"set-cookie", b"a=1; Path=/"),
    (b"set-cookie", b"b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT"),
]


@pytest.mark.parametrize("source", ["v2", "v1", "alb", "alb-multi"])
def test_result_maps_back_by_the_services_rules(source: str) -> None:
    result = lambda_result(source, 201, RESPONSE_HEADERS, "héllo".encode())
    assert result["statusCode"] == 201
    assert result["body"] == "héllo" and result["isBase64Encoded"] is False
    if source.startswith("alb"):
        assert result["statusDescription"] == "201 Created"
    # What the service itself makes of the result (lambdify's own reading of the services' rules)
    status, headers, body = response_from_result(source, result)
    assert status == 201 and body == "héllo".encode()
    got: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        got.setdefault(name.lower(), []).append(value)
    assert got[b"set-cookie"] == [b"a=1; Path=/", b"b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT"] or source == "alb"
    if source == "v2":
        assert result["cookies"] == ["a=1; Path=/", "b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT"]
        assert result["headers"]["x-many"] == "1, 2"
    elif source == "v1":
        assert result["multiValueHeaders"] == {
            "x-many": ["1", "2"],
            "set-cookie": ["a=1; Path=/", "b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT"],
        }
        assert result["headers"] == {"content-type": "text/plain; charset=utf-8"}
    elif source == "alb":  # several values under differently cased names, as Mangum sends them
        cookies = [value for name, value in result["headers"].items() if name.lower() == "set-cookie"]
        assert cookies == ["a=1; Path=/", "b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT"]
    else:
        assert result["multiValueHeaders"]["x-many"] == ["1", "2"]


@pytest.mark.parametrize(
    ("headers", "body", "b64"),
    [
        ([(b"content-type", b"image/png")], BINARY, True),
        ([(b"content-type", b"application/json")], b'{"a": 1}', False),
        ([(b"content-type", b"text/plain")], b"\xff\xfe", True),  # not UTF-8
        ([(b"content-type", b"text/plain"), (b"content-encoding", b"gzip")], b"abc", True),
        ([], b"", False),
    ],
    ids=["png", "json", "bad-utf8", "gzip", "empty"],
)
@pytest.mark.parametrize("source", ["v2", "v1", "alb"])
def test_binary_bodies_are_base64(source: str, headers: list[tuple[bytes, bytes]], body: bytes, b64: bool) -> None:
    result = lambda_result(source, 200, headers, body)
    assert result["isBase64Encoded"] is b64
    assert (base64.b64decode(result["body"]) if b64 else result["body"].encode()) == body
    assert response_from_result(source, result)[2] == body


def test_unknown_source_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event source"):
        asgi_scope("sqs", {})
    with pytest.raises(ValueError, match="unknown event source"):
        lambda_result("sqs", 200, [], b"")
