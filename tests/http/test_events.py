"""The HTTP ⇄ Lambda event codecs (DESIGN.md §5): events as API Gateway / ALB build them, results as they read them."""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections import OrderedDict, defaultdict
from enum import IntEnum
from http import HTTPStatus
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import ALBResolver, APIGatewayHttpResolver, APIGatewayRestResolver
from aws_lambda_powertools.utilities.data_classes import ALBEvent
from aws_lambda_powertools.utilities.parser.models import (
    AlbModel,
    APIGatewayProxyEventModel,
    APIGatewayProxyEventV2Model,
)
from pydantic import BaseModel, ValidationError

from lambdify.http.events import BadResponse, request_event, response_from_result

NOW = 1583348638.390  # 04/Mar/2020:19:03:58.390 UTC
FORMATS = ["v2", "v1", "alb", "alb-multi"]


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")
    )


PNG = _png()


def event(
    event_format: str = "v2",
    *,
    method: str = "GET",
    path: str = "/",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    **options: Any,
) -> dict[str, Any]:
    if headers is None:
        headers = [(b"host", b"api.example.com"), (b"user-agent", b"pytest")]
    return request_event(
        event_format,
        method=method,
        raw_path=path,
        query_string=query,
        headers=headers,
        body=body,
        source_ip="127.0.0.1",
        protocol="HTTP/1.1",
        request_id="c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        now=NOW,
        **options,
    )


def typical_get(event_format: str) -> dict[str, Any]:
    return event(
        event_format,
        path="/a/b%20c",
        query=b"a=1&a=2&b=x%20y&c=",
        headers=[
            (b"host", b"api.example.com:8000"),
            (b"user-agent", b"curl/8.5"),
            (b"accept", b"*/*"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"x-forwarded-for", b"10.0.0.2"),
            (b"cookie", b"a=1; b=2"),
        ],
    )


# --- v2: HTTP API payload 2.0 --------------------------------------------------------------------


def test_v2_event() -> None:
    assert typical_get("v2") == {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/a/b%20c",
        "rawQueryString": "a=1&a=2&b=x%20y&c=",
        "cookies": ["a=1", "b=2"],
        "headers": {
            "host": "api.example.com:8000",
            "user-agent": "curl/8.5",
            "accept": "*/*",
            "x-forwarded-for": "10.0.0.1,10.0.0.2",
        },
        "queryStringParameters": {"a": "1,2", "b": "x y", "c": ""},
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "lambdify00",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {
                "method": "GET",
                "path": "/a/b c",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "curl/8.5",
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "04/Mar/2020:19:03:58 +0000",
            "timeEpoch": 1583348638390,
        },
        "isBase64Encoded": False,
    }


@pytest.mark.parametrize(
    ("raw_path", "decoded"),
    [
        ("/plain", "/plain"),
        ("/a/b%20c", "/a/b c"),
        ("/slash%2Finside", "/slash/inside"),
        ("/caf%C3%A9", "/café"),
        ("/double//slash/./dot/../", "/double//slash/./dot/../"),
        ("/plus+sign", "/plus+sign"),
    ],
    ids=["plain", "space", "encoded-slash", "utf8", "not-normalised", "plus"],
)
def test_v2_raw_path_stays_raw(raw_path: str, decoded: str) -> None:
    e = event("v2", path=raw_path)
    assert e["rawPath"] == raw_path
    assert e["requestContext"]["http"]["path"] == decoded


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"a=1&a=2&a=3", {"a": "1,2,3"}),
        (b"b=x%20y&c=x+y&d=%2B", {"b": "x y", "c": "x y", "d": "+"}),
        (b"flag&empty=&k=v", {"flag": "", "empty": "", "k": "v"}),
        (b"caf%C3%A9=th%C3%A9", {"café": "thé"}),
        (b"a=1&&b=2", {"a": "1", "b": "2"}),
    ],
    ids=["repeated-key", "decoded", "blank-values", "utf8", "empty-piece"],
)
def test_v2_query(query: bytes, expected: dict[str, str]) -> None:
    e = event("v2", query=query)
    assert e["queryStringParameters"] == expected
    assert e["rawQueryString"] == query.decode()


def test_v2_omits_empty_fields() -> None:
    e = event("v2", headers=[])
    for key in ("cookies", "queryStringParameters", "body", "pathParameters", "stageVariables"):
        assert key not in e
    assert e["isBase64Encoded"] is False
    assert e["headers"] == {}
    assert e["requestContext"]["domainName"] == "localhost"
    assert e["requestContext"]["http"]["userAgent"] == ""


def test_v2_cookies_from_several_headers() -> None:
    e = event("v2", headers=[(b"cookie", b"a=1; b=2"), (b"x", b"y"), (b"cookie", b"c=3")])
    assert e["cookies"] == ["a=1", "b=2", "c=3"]
    assert e["headers"] == {"x": "y"}


@pytest.mark.parametrize(
    ("host", "domain", "prefix"),
    [
        ("abc123.execute-api.us-east-1.amazonaws.com", "abc123.execute-api.us-east-1.amazonaws.com", "abc123"),
        ("localhost:8000", "localhost", "localhost"),
        ("127.0.0.1:8000", "127.0.0.1", "127"),
        ("[::1]:8000", "[::1]", "[::1]"),
        ("[::1]", "[::1]", "[::1]"),
    ],
    ids=["aws", "port", "ipv4", "ipv6-port", "ipv6"],
)
def test_domain_from_host(host: str, domain: str, prefix: str) -> None:
    context = event("v2", headers=[(b"host", host.encode())])["requestContext"]
    assert (context["domainName"], context["domainPrefix"]) == (domain, prefix)


def test_time_fields_follow_now() -> None:
    first = event("v2")["requestContext"]
    later = request_event(
        "v2",
        method="GET",
        raw_path="/",
        query_string=b"",
        headers=[],
        body=b"",
        source_ip="127.0.0.1",
        protocol="HTTP/1.1",
        request_id="r",
        now=NOW + 86400 * 30 + 1.5,
    )["requestContext"]
    assert first["time"] == "04/Mar/2020:19:03:58 +0000"
    assert later["time"] == "03/Apr/2020:19:03:59 +0000"
    assert later["timeEpoch"] == 1585940639890


def test_now_defaults_to_the_clock() -> None:
    before = int(time.time() * 1000)
    e = request_event(
        "v1",
        method="GET",
        raw_path="/",
        query_string=b"",
        headers=[],
        body=b"",
        source_ip="127.0.0.1",
        protocol="HTTP/1.1",
        request_id="r",
    )
    assert before <= e["requestContext"]["requestTimeEpoch"] <= int(time.time() * 1000)


# --- request bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "as_text"),
    [
        (b"application/json", b'{"k": "v"}', True),
        (b"application/json; charset=utf-8", '{"k": "é"}'.encode(), True),
        (b"application/vnd.api+json", b"{}", True),
        (b"text/plain", "héllo".encode(), True),
        (b"text/csv", b"a,b\n1,2", True),
        (b"application/xml", b"<a/>", True),
        (b"image/svg+xml", b"<svg/>", True),
        (b"application/javascript", b"f()", True),
        (b"application/x-www-form-urlencoded", b"a=1&b=2", True),
        (None, b"no content type", True),
        (b"image/png", PNG, False),
        (b"application/octet-stream", b"text-like bytes", False),
        (b"text/plain", b"\xff\xfe not utf-8", False),
        (None, b"\x89binary", False),
    ],
    ids=[
        "json",
        "json-charset",
        "vendor-json",
        "text",
        "csv",
        "xml",
        "svg",
        "javascript",
        "form",
        "no-content-type",
        "png",
        "octet-stream",
        "text-not-utf8",
        "no-content-type-binary",
    ],
)
@pytest.mark.parametrize("event_format", ["v2", "v1"])
def test_api_gateway_body_encoding(event_format: str, content_type: bytes | None, body: bytes, as_text: bool) -> None:
    headers = [] if content_type is None else [(b"content-type", content_type)]
    e = event(event_format, method="POST", headers=headers, body=body)
    assert e["isBase64Encoded"] is not as_text
    assert e["body"] == (body.decode() if as_text else base64.b64encode(body).decode())


@pytest.mark.parametrize(
    ("content_type", "as_text"),
    [
        (b"text/html", True),
        (b"application/json", True),
        (b"application/javascript", True),
        (b"application/xml", True),
        (b"application/x-www-form-urlencoded", False),
        (b"application/vnd.api+json", False),
    ],
    ids=["html", "json", "javascript", "xml", "form", "vendor-json"],
)
@pytest.mark.parametrize("event_format", ["alb", "alb-multi"])
def test_alb_body_encoding_uses_albs_list(event_format: str, content_type: bytes, as_text: bool) -> None:
    e = event(event_format, method="POST", headers=[(b"content-type", content_type)], body=b"a=1")
    assert (e["body"], e["isBase64Encoded"]) == (("a=1", False) if as_text else ("YT0x", True))


@pytest.mark.parametrize(
    ("event_format", "empty"),
    [("v2", "absent"), ("v1", None), ("alb", ""), ("alb-multi", "")],
    ids=FORMATS,
)
def test_empty_body(event_format: str, empty: str | None) -> None:
    e = event(event_format, headers=[(b"content-type", b"image/png")])
    assert e.get("body", "absent") == empty
    assert e["isBase64Encoded"] is False


# --- v1: REST API proxy -----------------------------------------------------------------------------


def test_v1_event() -> None:
    e = typical_get("v1")
    assert {k: v for k, v in e.items() if k != "requestContext"} == {
        "resource": "/{proxy+}",
        "path": "/a/b c",
        "httpMethod": "GET",
        "headers": {
            "host": "api.example.com:8000",
            "user-agent": "curl/8.5",
            "accept": "*/*",
            "x-forwarded-for": "10.0.0.2",
            "cookie": "a=1; b=2",
        },
        "multiValueHeaders": {
            "host": ["api.example.com:8000"],
            "user-agent": ["curl/8.5"],
            "accept": ["*/*"],
            "x-forwarded-for": ["10.0.0.1", "10.0.0.2"],
            "cookie": ["a=1; b=2"],
        },
        "queryStringParameters": {"a": "2", "b": "x y", "c": ""},
        "multiValueQueryStringParameters": {"a": ["1", "2"], "b": ["x y"], "c": [""]},
        "pathParameters": {"proxy": "a/b c"},
        "stageVariables": None,
        "body": None,
        "isBase64Encoded": False,
    }
    context = e["requestContext"]
    identity = context.pop("identity")
    assert context == {
        "accountId": "000000000000",
        "apiId": "lambdify00",
        "domainName": "api.example.com",
        "domainPrefix": "api",
        "extendedRequestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        "httpMethod": "GET",
        "path": "/a/b c",
        "protocol": "HTTP/1.1",
        "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        "requestTime": "04/Mar/2020:19:03:58 +0000",
        "requestTimeEpoch": 1583348638390,
        "resourceId": "proxy0",
        "resourcePath": "/{proxy+}",
        "stage": "$default",
    }
    assert identity.pop("sourceIp") == "127.0.0.1"
    assert identity.pop("userAgent") == "curl/8.5"
    assert set(identity.values()) == {None}
    assert "cognitoIdentityId" in identity


def test_v1_root_and_no_query() -> None:
    e = event("v1", path="/")
    assert (e["resource"], e["pathParameters"], e["requestContext"]["resourcePath"]) == ("/", None, "/")
    assert e["queryStringParameters"] is None
    assert e["multiValueQueryStringParameters"] is None


def test_v1_named_stage_prefixes_context_path() -> None:
    e = event("v1", path="/items/1", stage="prod")
    assert e["path"] == "/items/1"
    assert e["requestContext"]["path"] == "/prod/items/1"
    assert e["requestContext"]["stage"] == "prod"


# --- ALB ----------------------------------------------------------------------------------------


def test_alb_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    assert typical_get("alb") == {
        "requestContext": {
            "elb": {
                "targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/fn/0123456789abcdef"
            }
        },
        "httpMethod": "GET",
        "path": "/a/b%20c",
        "queryStringParameters": {"a": "2", "b": "x%20y", "c": ""},
        "headers": {
            "host": "api.example.com:8000",
            "user-agent": "curl/8.5",
            "accept": "*/*",
            "x-forwarded-for": "10.0.0.2",
            "cookie": "a=1; b=2",
        },
        "body": "",
        "isBase64Encoded": False,
    }


def test_alb_multi_value_event_has_only_multi_value_fields() -> None:
    e = typical_get("alb-multi")
    assert "headers" not in e
    assert "queryStringParameters" not in e
    assert e["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x%20y"], "c": [""]}
    assert e["multiValueHeaders"]["x-forwarded-for"] == ["10.0.0.1", "10.0.0.2"]
    assert e["multiValueHeaders"]["cookie"] == ["a=1; b=2"]


def test_alb_without_query_sends_empty_objects() -> None:
    assert event("alb")["queryStringParameters"] == {}
    assert event("alb-multi")["multiValueQueryStringParameters"] == {}


def test_alb_target_group_arn_names_function_and_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    arn = event("alb", function_name="orders")["requestContext"]["elb"]["targetGroupArn"]
    assert arn == "arn:aws:elasticloadbalancing:eu-west-1:000000000000:targetgroup/orders/0123456789abcdef"


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown event format"):
        event("v3")
    with pytest.raises(ValueError, match="unknown event format"):
        response_from_result("v3", {"statusCode": 200})


# --- Powertools accepts the events ----------------------------------------------------------------

_MODELS: dict[str, type[BaseModel]] = {
    "v2": APIGatewayProxyEventV2Model,
    "v1": APIGatewayProxyEventModel,
    "alb": AlbModel,
}
_REQUESTS: dict[str, dict[str, Any]] = {
    "typical-get": {"path": "/a/b%20c", "query": b"a=1&a=2&b=x%20y"},
    "json-post": {"method": "POST", "headers": [(b"content-type", b"application/json")], "body": b'{"k": 1}'},
    "png-put": {"method": "PUT", "headers": [(b"content-type", b"image/png")], "body": PNG},
    "bare-root": {"headers": []},
}


@pytest.mark.parametrize("request_kind", list(_REQUESTS))
@pytest.mark.parametrize("event_format", ["v2", "v1", "alb"])
def test_powertools_models_accept(event_format: str, request_kind: str) -> None:
    _MODELS[event_format].model_validate(event(event_format, **_REQUESTS[request_kind]))


class _AlbMultiValueModel(AlbModel):
    headers: dict[str, str] | None = None  # type: ignore[assignment]
    queryStringParameters: dict[str, str] | None = None  # type: ignore[assignment]
    multiValueHeaders: dict[str, list[str]]
    multiValueQueryStringParameters: dict[str, list[str]]


@pytest.mark.parametrize("request_kind", list(_REQUESTS))
def test_powertools_reads_alb_multi_value_events(request_kind: str) -> None:
    e = event("alb-multi", **_REQUESTS[request_kind])
    # Powertools' AlbModel requires the single-value fields, which ALB leaves out in multi-value
    # mode; everything else in it (and its multi-value data class) accepts the event.
    with pytest.raises(ValidationError) as info:
        AlbModel.model_validate(e)
    assert {error["loc"] for error in info.value.errors()} == {("headers",), ("queryStringParameters",)}
    _AlbMultiValueModel.model_validate(e)
    assert ALBEvent(e).multi_value_headers == e["multiValueHeaders"]


class _Context:
    function_name = "fn"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


@pytest.mark.parametrize(
    ("event_format", "resolver"),
    [("v2", APIGatewayHttpResolver), ("v1", APIGatewayRestResolver), ("alb", ALBResolver)],
    ids=["v2", "v1", "alb"],
)
def test_powertools_resolver_round_trip(event_format: str, resolver: type[Any]) -> None:
    app = resolver()

    @app.get("/hello/<name>")  # type: ignore[untyped-decorator]
    def hello(name: str) -> dict[str, Any]:
        return {"name": name, "q": app.current_event.get_query_string_value("q")}

    result = app.resolve(event(event_format, path="/hello/ada", query=b"q=1"), _Context())
    status, headers, body = response_from_result(event_format, result)
    assert status == 200
    assert (b"content-type", b"application/json") in headers
    assert json.loads(body) == {"name": "ada", "q": "1"}


# --- responses ------------------------------------------------------------------------------------


def test_v2_structured_response() -> None:
    result = {
        "statusCode": 201,
        "headers": {"Content-Type": "text/html", "X-Count": 3, "X-Flag": True, "X-Ratio": 0.5},
        "cookies": ["a=1; Path=/", "b=2; HttpOnly"],
        "body": "<p>made</p>",
        "isBase64Encoded": False,
    }
    assert response_from_result("v2", result) == (
        201,
        [
            (b"content-type", b"text/html"),
            (b"x-count", b"3"),
            (b"x-flag", b"true"),
            (b"x-ratio", b"0.5"),
            (b"set-cookie", b"a=1; Path=/"),
            (b"set-cookie", b"b=2; HttpOnly"),
            (b"content-length", b"11"),
        ],
        b"<p>made</p>",
    )


@pytest.mark.parametrize(
    ("result", "body"),
    [
        ({"message": "Hello from Lambda!"}, b'{"message": "Hello from Lambda!"}'),
        ("Hello from Lambda!", b"Hello from Lambda!"),
        ([1, "two", None], b'[1, "two", null]'),
        (42, b"42"),
        (None, b"null"),
        ({"status": 404}, b'{"status": 404}'),
    ],
    ids=["dict", "str", "list", "int", "none", "dict-without-statusCode"],
)
def test_v2_inferred_response(result: Any, body: bytes) -> None:
    assert response_from_result("v2", result) == (
        200,
        [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        body,
    )


@pytest.mark.parametrize(
    ("event_format", "content_type"),
    [
        ("v2", b"text/plain; charset=utf-8"),
        ("v1", b"application/json"),
        ("alb", b"application/octet-stream"),
        ("alb-multi", b"application/octet-stream"),
    ],
    ids=FORMATS,
)
def test_default_content_type(event_format: str, content_type: bytes) -> None:
    assert response_from_result(event_format, {"statusCode": 200, "body": "x"})[1] == [
        (b"content-type", content_type),
        (b"content-length", b"1"),
    ]
    # A null content-type suppresses the default, as on REST.
    key = "multiValueHeaders" if event_format == "alb-multi" else "headers"
    nulled = {"statusCode": 200, key: {"Content-Type": None}}
    assert response_from_result(event_format, nulled)[1] == [(b"content-length", b"0")]


def test_v1_merges_headers_and_multi_value_headers() -> None:
    result = {
        "statusCode": 200,
        "headers": {"Set-Cookie": "lost=1", "X-Single": "s", "Content-Type": "text/plain"},
        "multiValueHeaders": {"set-cookie": ["a=1", "b=2"], "X-Multi": ["1", 2]},
        "body": "ok",
    }
    assert response_from_result("v1", result)[1] == [
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"x-single", b"s"),
        (b"content-type", b"text/plain"),
        (b"x-multi", b"1"),
        (b"x-multi", b"2"),
        (b"content-length", b"2"),
    ]


@pytest.mark.parametrize(
    ("event_format", "expected"),
    [
        ("v2", [(b"x-single", b"s")]),
        ("alb", [(b"x-single", b"s")]),
        ("alb-multi", [(b"x-multi", b"1"), (b"x-multi", b"2")]),
    ],
    ids=["v2-has-no-multi-value", "alb-reads-headers", "alb-multi-reads-multi-value"],
)
def test_headers_field_by_format(event_format: str, expected: list[tuple[bytes, bytes]]) -> None:
    result = {
        "statusCode": 200,
        "headers": {"X-Single": "s", "Content-Type": "text/plain"},
        "multiValueHeaders": {"X-Multi": ["1", "2"], "Content-Type": ["text/plain"]},
    }
    headers = response_from_result(event_format, result)[1]
    assert [h for h in headers if h[0] not in (b"content-type", b"content-length")] == expected
    assert headers.count((b"content-type", b"text/plain")) == 1


def test_cookies_are_v2_only() -> None:
    result = {"statusCode": 200, "cookies": ["a=1"]}
    assert (b"set-cookie", b"a=1") not in response_from_result("alb", result)[1]
    with pytest.raises(BadResponse, match="unexpected key 'cookies'"):
        response_from_result("v1", result)


def test_service_owned_headers_are_replaced() -> None:
    result = {
        "statusCode": 200,
        "headers": {"Content-Length": "999", "Connection": "close", "Transfer-Encoding": "chunked", "X-Ok": "1"},
        "body": "four",
    }
    assert response_from_result("v2", result)[1] == [
        (b"x-ok", b"1"),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"4"),
    ]


@pytest.mark.parametrize("event_format", FORMATS)
def test_binary_round_trip(event_format: str) -> None:
    e = event(event_format, method="POST", headers=[(b"content-type", b"image/png")], body=PNG)
    assert e["isBase64Encoded"] is True
    assert base64.b64decode(e["body"]) == PNG
    key = "multiValueHeaders" if event_format == "alb-multi" else "headers"
    content_type: Any = ["image/png"] if event_format == "alb-multi" else "image/png"
    result = {"statusCode": 200, key: {"Content-Type": content_type}, "body": e["body"], "isBase64Encoded": True}
    status, headers, body = response_from_result(event_format, result)
    assert body == PNG
    assert headers == [(b"content-type", b"image/png"), (b"content-length", str(len(PNG)).encode())]


@pytest.mark.parametrize("event_format", FORMATS)
def test_head_keeps_headers_and_drops_body(event_format: str) -> None:
    result = {"statusCode": 200, "body": "hello"}
    status, headers, body = response_from_result(event_format, result, head=True)
    assert (status, body) == (200, b"")
    assert headers == response_from_result(event_format, result)[1]
    assert (b"content-length", b"5") in headers


def test_head_on_inferred_v2_response() -> None:
    assert response_from_result("v2", {"a": 1}, head=True) == (
        200,
        [(b"content-type", b"application/json"), (b"content-length", b"8")],
        b"",
    )


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    assert response_from_result("v2", {"statusCode": status, "body": "ignored"}) == (
        status,
        [(b"content-type", b"text/plain; charset=utf-8")],
        b"",
    )


@pytest.mark.parametrize("event_format", FORMATS)
def test_missing_or_null_body(event_format: str) -> None:
    assert response_from_result(event_format, {"statusCode": 404})[2] == b""
    assert response_from_result(event_format, {"statusCode": 404, "body": None})[2] == b""


def test_utf8_body() -> None:
    assert response_from_result("v1", {"statusCode": 200, "body": "thé"})[1:] == (
        [(b"content-type", b"application/json"), (b"content-length", b"4")],
        "thé".encode(),
    )


@pytest.mark.parametrize(
    ("event_format", "result", "message"),
    [
        ("v1", {"body": "no status"}, "no statusCode"),
        ("v1", "a string", "no statusCode"),
        ("alb", {"message": "hi"}, "no statusCode"),
        ("alb-multi", None, "no statusCode"),
        ("v2", {"statusCode": "200"}, "statusCode must be an int"),
        ("v2", {"statusCode": True}, "statusCode must be an int"),
        ("v2", {"statusCode": 200.0}, "statusCode must be an int"),
        ("v1", {"statusCode": 99}, "statusCode must be an int"),
        ("alb", {"statusCode": 600}, "statusCode must be an int"),
        ("v2", {"statusCode": 200, "body": {"a": 1}}, "body must be a string"),
        ("v1", {"statusCode": 200, "body": b"bytes"}, "body must be a string"),
        ("v2", {"statusCode": 200, "body": "not base64!", "isBase64Encoded": True}, "not base64"),
        ("alb", {"statusCode": 200, "body": "héllo", "isBase64Encoded": True}, "not base64"),
        ("v2", {"statusCode": 200, "headers": ["a", "b"]}, "headers must be an object"),
        ("v1", {"statusCode": 200, "multiValueHeaders": "x"}, "multiValueHeaders must be an object"),
        ("v1", {"statusCode": 200, "multiValueHeaders": {"x": "1"}}, "must be a list"),
        ("v2", {"statusCode": 200, "headers": {"x": {"nested": 1}}}, "header value must be a string"),
        ("alb", {"statusCode": 200, "headers": {"x": ["1"]}}, "header value must be a string"),
        ("v2", {"statusCode": 200, "headers": {"x": "a\r\nInjected: 1"}}, "invalid header value"),
        ("v2", {"statusCode": 200, "headers": {"bad name": "1"}}, "invalid header name"),
        ("v2", {"statusCode": 200, "headers": {"": "1"}}, "invalid header name"),
        ("v2", {"statusCode": 200, "cookies": "a=1"}, "cookies must be a list"),
        ("v2", {"statusCode": 200, "cookies": [None]}, "header value must be a string"),
        ("v1", {"statusCode": 200, "extra": 1}, "unexpected key 'extra'"),
        ("v2", object(), "not JSON-serialisable"),
        ("v2", {"when": {1, 2}}, "not JSON-serialisable"),
    ],
    ids=[
        "v1-no-status",
        "v1-not-a-dict",
        "alb-no-status",
        "alb-multi-none",
        "status-string",
        "status-bool",
        "status-float",
        "status-too-low",
        "status-too-high",
        "body-dict",
        "body-bytes",
        "bad-base64",
        "non-ascii-base64",
        "headers-list",
        "multi-value-headers-str",
        "multi-value-not-list",
        "header-value-dict",
        "header-value-list",
        "header-injection",
        "header-name-space",
        "header-name-empty",
        "cookies-str",
        "cookie-none",
        "v1-unknown-key",
        "v2-unserialisable",
        "v2-set",
    ],
)
def test_bad_response(event_format: str, result: Any, message: str) -> None:
    with pytest.raises(BadResponse, match=message):
        response_from_result(event_format, result)


def test_json_shaped_values_are_accepted() -> None:
    # Lambda sends the result as JSON: a dict subclass is an object, a tuple an array, an IntEnum a number.
    class Level(IntEnum):
        HIGH = 3

    result = {
        "statusCode": HTTPStatus.CREATED,
        "headers": OrderedDict([("X-Level", Level.HIGH)]),
        "multiValueHeaders": defaultdict[str, Any](list, {"X-Many": ("a", "b")}),
        "cookies": ("c=1",),
        "body": "ok",
    }
    status, headers, _ = response_from_result("v1", {k: v for k, v in result.items() if k != "cookies"})
    assert type(status) is int and status == 201
    assert headers[:3] == [(b"x-level", b"3"), (b"x-many", b"a"), (b"x-many", b"b")]
    assert (b"set-cookie", b"c=1") in response_from_result("v2", result)[1]


def test_v2_ignores_unknown_keys() -> None:
    result = {"statusCode": 200, "statusDescription": "200 OK", "extra": [1], "body": "ok"}
    assert response_from_result("v2", result)[0] == 200
    assert response_from_result("alb", result)[0] == 200
