"""Lambda's payload limits on every surface: 6 MB synchronous (a response 100 bytes more), 1 MB Event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from lambdify import Function, FunctionApp, FunctionError, LambdaContext, handler

REQUEST_LIMIT = 6 * 1024 * 1024  # "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
RESPONSE_LIMIT = REQUEST_LIMIT + 100  # "... exceeded maximum allowed payload size (6291556 bytes)."
INVOKE = "/2015-03-31/functions/echo/invocations"


@pytest.fixture
def echo() -> Iterator[Function[Any]]:
    @handler(name="echo")
    def echo(event: Any, context: LambdaContext) -> Any:
        if isinstance(event, dict) and "size" in event:
            return {"body": "x" * event["size"]}
        return {"got": len(json.dumps(event))}

    yield echo
    echo.shutdown()


def _event_of(size: int) -> dict[str, str]:
    """An event whose JSON (as Lambda's runtime writes it) is exactly `size` bytes."""
    return {"data": "x" * (size - len('{"data": ""}'))}


@pytest.mark.parametrize("surface", ["invoke", "call"])
def test_an_event_over_6_mb_is_refused_naming_its_size_and_the_limit(echo: Function[Any], surface: str) -> None:
    context = SimpleNamespace(aws_request_id="r-1", get_remaining_time_in_millis=lambda: 3000)
    call = echo.invoke if surface == "invoke" else lambda event: echo(event, context)
    assert call(_event_of(REQUEST_LIMIT)) == {"got": REQUEST_LIMIT}
    with pytest.raises(ValueError) as caught:
        call(_event_of(REQUEST_LIMIT + 1))
    assert f"{REQUEST_LIMIT + 1} bytes" in str(caught.value)
    assert f"{REQUEST_LIMIT} bytes" in str(caught.value)
    assert echo.stats()["invocations"] == 1  # the refused one never ran


@pytest.mark.anyio
async def test_ainvoke_refuses_an_event_over_6_mb(echo: Function[Any]) -> None:
    with pytest.raises(ValueError, match=f"{REQUEST_LIMIT}"):
        await echo.ainvoke({"nested": [_event_of(REQUEST_LIMIT)]})
    assert await echo.ainvoke({"nested": [{"a": 1}]}) == {"got": len('{"nested": [{"a": 1}]}')}


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"s": "é" * 1_100_000}, id="escaped-unicode-in-a-plain-object"),
        pytest.param({"list": ["\x00" * 1_100_000]}, id="control-characters"),
        pytest.param("y" * (REQUEST_LIMIT + 1), id="a-string"),
        pytest.param([{"deep": ["z" * 1_000_000]}] * 7, id="nested"),
    ],
)
def test_the_size_is_the_json_that_would_be_sent(echo: Function[Any], event: Any) -> None:
    with pytest.raises(ValueError, match="over Lambda's limit"):
        echo.invoke(event)


def test_a_result_over_the_response_limit_is_a_function_error(echo: Function[Any]) -> None:
    fits = RESPONSE_LIMIT - len('{"body": ""}')
    assert len(echo.invoke({"size": fits})["body"]) == fits
    with pytest.raises(FunctionError) as caught:
        echo.invoke({"size": fits + 1})
    assert caught.value.error_type == "Function.ResponseSizeTooLarge"
    assert caught.value.error_message == (
        f"Response payload size ({RESPONSE_LIMIT + 1} bytes) exceeded maximum allowed payload size "
        f"({RESPONSE_LIMIT} bytes)."
    )


@pytest.fixture
async def client(echo: Function[Any]) -> Any:
    app = FunctionApp([echo])
    transport = httpx.ASGITransport(app=app)
    # (lifespan: shutdown finishes the queued Event invocations and retires the contexts on this loop)
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://lambda") as client:
        yield client


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("invocation_type", "limit"), [("RequestResponse", REQUEST_LIMIT), ("Event", 1024 * 1024)], ids=["sync", "event"]
)
async def test_the_invoke_api_refuses_a_request_over_its_limit(
    client: httpx.AsyncClient, invocation_type: str, limit: int
) -> None:
    headers = {"X-Amz-Invocation-Type": invocation_type}
    fits = await client.post(INVOKE, content=json.dumps(_event_of(limit)), headers=headers)
    assert fits.status_code == (200 if invocation_type == "RequestResponse" else 202)
    over = await client.post(INVOKE, content=json.dumps(_event_of(limit + 1)), headers=headers)
    assert over.status_code == 413
    assert over.headers["x-amzn-errortype"] == "RequestTooLargeException"
    assert str(limit) in over.json()["message"]


@pytest.mark.anyio
async def test_the_invoke_api_answers_a_response_over_6_mb_with_lambdas_error(client: httpx.AsyncClient) -> None:
    response = await client.post(INVOKE, json={"size": RESPONSE_LIMIT})
    assert response.status_code == 200
    assert response.headers["x-amz-function-error"] == "Unhandled"
    payload = response.json()
    assert payload["errorType"] == "Function.ResponseSizeTooLarge"
    assert f"({RESPONSE_LIMIT} bytes)" in payload["errorMessage"]


@pytest.mark.anyio
async def test_fn_asgi_refuses_a_body_over_6_mb_and_a_response_over_the_limit(echo: Function[Any]) -> None:
    @handler(name="page")
    def page(event: Any, context: LambdaContext) -> Any:
        return {"statusCode": 200, "body": "p" * int(event["queryStringParameters"]["size"])}

    try:
        transport = httpx.ASGITransport(app=page.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
            assert (await client.post("/", content=b"b" * REQUEST_LIMIT, params={"size": "1"})).status_code == 200
            assert (await client.post("/", content=b"b" * (REQUEST_LIMIT + 1))).status_code == 413
            assert (await client.get("/", params={"size": "1000"})).status_code == 200
            too_large = await client.get("/", params={"size": str(RESPONSE_LIMIT)})
            assert too_large.status_code == 502
            assert too_large.json() == {"message": "Internal Server Error"}
    finally:
        await page.ashutdown()
