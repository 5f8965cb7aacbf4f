"""Results are marshalled as AWS's runtime client (awslambdaric) marshals them: compared, not assumed."""

from __future__ import annotations

import collections
import enum
import importlib
import json
import math
import sys
import textwrap
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from awslambdaric.lambda_runtime_exception import FaultException
from awslambdaric.lambda_runtime_marshaller import LambdaMarshaller

from lambdify import Function, FunctionApp, FunctionError, LambdaContext, handler
from lambdify.core import marshal as _json
from lambdify.core.payload import ensure_json
from lambdify.isolation.channel import decode, encode

Point = collections.namedtuple("Point", "x y")


class Color(enum.IntEnum):
    RED = 1


class Shade(enum.StrEnum):
    DARK = "dark"


class Fields:
    def _asdict(self) -> dict[str, Any]:
        return {"field": Decimal("2.50")}


class NotADict(tuple):  # type: ignore[type-arg]
    def _asdict(self) -> list[int]:
        return [1]


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


VALUES = [
    pytest.param(Decimal("1.10"), id="decimal"),
    pytest.param({"price": Decimal("19.99"), "qty": Decimal("1E+2"), "neg": Decimal("-0")}, id="decimals-in-object"),
    pytest.param([Decimal("0.1000000000000000055511151231257827")], id="decimal-precision"),
    pytest.param([Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")], id="decimal-special"),
    pytest.param({"data": b"abc"}, id="bytes-in-object"),
    pytest.param({b"key": 1}, id="bytes-key"),
    pytest.param({"data": b"\xff"}, id="bytes-not-utf8"),
    pytest.param({"a": [1, {"b": (2, 3)}], "c": None, "d": True}, id="nested"),
    pytest.param({"é": "ü€😀", "ctrl": "\x00\x1f\x7f\u2028"}, id="unicode"),
    pytest.param("\ud800", id="lone-surrogate"),
    pytest.param([1.0, 0.1, 1e300, -0.0, 1e-7, 2**63], id="floats"),
    pytest.param([math.nan, math.inf, -math.inf], id="nan-infinity"),
    pytest.param({math.nan: 1, 1.5: 2, 3: 4, None: 5, False: 6}, id="non-string-keys"),
    pytest.param(Point(1, 2), id="namedtuple"),
    pytest.param({"p": [Point(b"x", Decimal("3.0"))]}, id="namedtuple-nested"),
    pytest.param(Fields(), id="asdict-object"),
    pytest.param(NotADict((1,)), id="asdict-not-a-dict"),
    pytest.param([Color.RED, Shade.DARK, {Color.RED: "key"}], id="enums"),
    pytest.param(collections.OrderedDict(a=1), id="ordered-dict"),
    pytest.param({1, 2}, id="set"),
    pytest.param({"when": object()}, id="object"),
    pytest.param({(1, 2): "tuple key"}, id="tuple-key"),
    pytest.param({Decimal("1"): "decimal key"}, id="decimal-key"),
    pytest.param(bytearray(b"x"), id="bytearray"),
    pytest.param(10**5000, id="int-too-long"),
    pytest.param(_cycle(), id="cycle"),
    pytest.param({"statusCode": 200, "headers": {"x": "y"}, "body": "hi"}, id="plain"),
]


@pytest.fixture(params=["AWS_Lambda_python3.11", "AWS_Lambda_python3.12"], ids=["ascii", "unicode"])
def runtime(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[LambdaMarshaller]:
    """awslambdaric as configured on a runtime (3.12+ writes raw Unicode), and lambdify likewise."""
    monkeypatch.setenv("AWS_EXECUTION_ENV", request.param)
    _json.build()
    yield LambdaMarshaller()
    monkeypatch.undo()
    _json.build()


def _theirs(marshaller: LambdaMarshaller, value: Any) -> tuple[str, Any]:
    try:
        payload, _content_type = marshaller.marshal_response(value)
    except FaultException as fault:
        assert fault.exception_type == "Runtime.MarshalError"
        return "error", fault.msg.removeprefix("Unable to marshal response: ")
    return "ok", payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass")


def _ours(value: Any) -> tuple[str, Any]:
    try:
        return "ok", _json.marshal(value)
    except (TypeError, ValueError) as exc:
        return "error", str(exc)


@pytest.mark.parametrize("value", VALUES)
def test_marshal_writes_what_awslambdaric_writes(runtime: LambdaMarshaller, value: Any) -> None:
    theirs, ours = _theirs(runtime, value), _ours(value)
    if theirs[0] == "ok" and b"\xed\xa0\x80" in theirs[1]:
        # awslambdaric cannot post a lone surrogate as UTF-8 (the runtime fails); lambdify escapes it
        assert ours == ("ok", b'"\\ud800"')
    elif theirs[0] == "error" and "recursion" in theirs[1]:
        assert ours == ("error", "Circular reference detected")
    else:
        assert ours == theirs


@pytest.mark.parametrize("value", VALUES)
def test_the_check_agrees_with_awslambdaric_and_bounds_the_size(
    runtime: LambdaMarshaller, value: Any, request: pytest.FixtureRequest
) -> None:
    theirs = _theirs(runtime, value)
    case = request.node.callspec.id.split("-", 1)[1]
    if case == "asdict-not-a-dict":
        # Documented difference (docs/fidelity.md): the check, a C encoder, takes a tuple as an array
        # without asking its `_asdict()`; simplejson refuses one whose `_asdict()` is not a dict.
        assert theirs[0] == "error"
        ensure_json(value)
        return
    try:
        bound = ensure_json(value)
    except (TypeError, ValueError) as exc:
        assert theirs[0] == "error", f"lambdify refused what awslambdaric marshals: {exc}"
        return
    assert theirs[0] == "ok", f"lambdify accepted what awslambdaric refuses: {theirs[1]}"
    if not case.startswith("namedtuple"):  # (measured as the array the check writes: documented)
        assert bound >= len(_json.marshal(value))


@pytest.mark.parametrize("value", VALUES)
def test_the_process_channel_carries_the_same_value(value: Any) -> None:
    theirs = _theirs(LambdaMarshaller(), value)
    if theirs[0] == "error" or isinstance(value, bytes):
        return
    carried = decode(encode({"result": value})[4:])["result"]
    assert json.dumps(carried) == json.dumps(json.loads(theirs[1]))


def test_a_bytes_result_is_sent_as_it_is() -> None:
    """awslambdaric posts a `bytes` result unchanged (content type application/unknown), UTF-8 or not."""
    assert _json.marshal(b"\xff\x00raw") == LambdaMarshaller().marshal_response(b"\xff\x00raw")[0]
    ensure_json({"ok": 1})  # (and a plain object stays on the quick path)


def test_invoke_returns_decimal_and_bytes_results(functions: list[Function[Any]]) -> None:
    @handler
    def priced(event: Any, context: LambdaContext) -> Any:
        return {"price": Decimal("19.99"), "raw": b"abc"} if event else b"\xffraw"

    functions.append(priced)
    assert priced.invoke({"x": 1}) == {"price": Decimal("19.99"), "raw": b"abc"}
    assert priced.invoke({}) == b"\xffraw"
    bad = _bad_bytes(functions)
    with pytest.raises(FunctionError) as caught:
        bad.invoke({})
    assert caught.value.error_type == "Runtime.MarshalError"
    assert "can't decode byte 0xff" in caught.value.error_message


def _bad_bytes(functions: list[Function[Any]]) -> Function[Any]:
    @handler
    def bad(event: Any, context: LambdaContext) -> Any:
        return {"raw": b"\xff"}

    functions.append(bad)
    return bad


@pytest.mark.anyio
async def test_the_invoke_api_sends_the_runtimes_bytes(functions: list[Function[Any]]) -> None:
    result = {"price": Decimal("19.99"), "point": Point(1, 2), "name": "ü", "raw": b"abc"}

    @handler
    def priced(event: Any, context: LambdaContext) -> Any:
        return result if event else b"\xffraw"

    functions.append(priced)
    app = FunctionApp([priced])
    transport = httpx.ASGITransport(app=app)
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://lambda") as client:
        response = await client.post("/2015-03-31/functions/priced/invocations", json={"go": True})
        raw = await client.post("/2015-03-31/functions/priced/invocations", json={})
    assert response.status_code == 200
    assert response.content == LambdaMarshaller().marshal_response(result)[0].encode()
    assert response.content == b'{"price": 19.99, "point": {"x": 1, "y": 2}, "name": "\\u00fc", "raw": "abc"}'
    assert raw.content == b"\xffraw"


PROCESS = """
from decimal import Decimal
from collections import namedtuple
from lambdify import handler

Point = namedtuple("Point", "x y")

@handler(isolation="process")
def priced(event, context):
    return {"price": Decimal("19.99"), "point": Point(1, 2), "raw": b"abc"}
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process isolation is Linux-first")
def test_process_isolation_marshals_through_the_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"marshal_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PROCESS))
    importlib.invalidate_caches()
    module = importlib.import_module(name)
    try:
        assert module.priced.invoke({}) == {"price": 19.99, "point": {"x": 1, "y": 2}, "raw": "abc"}
    finally:
        module.priced.shutdown()
        sys.modules.pop(name, None)
