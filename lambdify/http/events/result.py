"""An HTTP response (status, header pairs, body bytes) written as the Lambda result that API
Gateway (v2, v1), a Function URL or an ALB turns back into it: the inverse of `response_from_result`.

- `"v2"` (and Function URLs): `headers` (repeated names joined with `", "`), `Set-Cookie` values in
  `cookies`;
- `"v1"`: `headers` for names sent once, `multiValueHeaders` for repeated ones;
- `"alb"`: `statusDescription` (`"200 OK"`) and `headers`; a repeated name is sent under
  differently cased spellings (`set-cookie`, `Set-cookie`, ...), the only way a single-value
  target group passes several `Set-Cookie`s (Mangum does the same);
- `"alb-multi"`: `statusDescription` and `multiValueHeaders`.

The body is text when its content type is textual, no `content-encoding` is set and it is valid
UTF-8; otherwise it is base64-encoded with `isBase64Encoded: true`.
"""

from __future__ import annotations

import base64
from http import HTTPStatus
from itertools import islice
from typing import Any, Final

from .shared import _is_text

__all__ = ["lambda_result"]

_PHRASES: Final = {status.value: status.phrase for status in HTTPStatus}


def lambda_result(source: str, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, Any]:
    """The result a handler returns to `source` for this response.

    ```python
    lambda_result("v2", 200, [(b"content-type", b"text/plain"), (b"set-cookie", b"a=1")], b"hi")
    # {"statusCode": 200, "headers": {"content-type": "text/plain"}, "cookies": ["a=1"],
    #  "body": "hi", "isBase64Encoded": False}
    ```
    """
    if source == "v2":
        return v2_result(status, headers, body)
    every: dict[str, list[str]] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        values = every.get(name)
        if values is None:
            every[name] = [value]
        else:
            values.append(value)
    text, b64 = _body(body, every)
    result: dict[str, Any] = {"statusCode": status}
    if source == "v1":
        result["headers"] = {name: values[0] for name, values in every.items() if len(values) == 1}
        result["multiValueHeaders"] = {name: values for name, values in every.items() if len(values) > 1}
    elif source == "alb" or source == "alb-multi":
        result["statusDescription"] = f"{status} {_PHRASES.get(status, 'Unknown')}"
        if source == "alb-multi":
            result["multiValueHeaders"] = every
        else:
            single: dict[str, str] = {}
            for name, values in every.items():
                if len(values) == 1:
                    single[name] = values[0]
                else:
                    single.update(zip(_casings(name), values, strict=False))
            result["headers"] = single
    else:
        raise ValueError(f"unknown event source {source!r}")
    result["body"] = text
    result["isBase64Encoded"] = b64
    return result


def v2_result(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, Any]:
    """`lambda_result("v2", ...)`, called directly (every event of an HTTP API or Function URL)."""
    single: dict[str, str] = {}
    cookies: list[str] = []
    names = _NAMES
    for raw_name, raw_value in headers:
        name = names.get(raw_name) or _name(raw_name)
        value = raw_value.decode("latin-1")
        if name == "set-cookie":
            cookies.append(value)
            continue
        previous = single.get(name)
        single[name] = value if previous is None else f"{previous}, {value}"
    result: dict[str, Any] = {"statusCode": status, "headers": single}
    if cookies:
        result["cookies"] = cookies
    result["body"], result["isBase64Encoded"] = _text_or_base64(body, single.get("content-type"), single)
    return result


def _body(body: bytes, headers: dict[str, list[str]]) -> tuple[str, bool]:
    content_type = headers.get("content-type")
    return _text_or_base64(body, content_type[-1] if content_type else None, headers)


_NAMES: dict[bytes, str] = {}  # a response header name -> its text in lower case (an app sends a few)


def _name(raw: bytes) -> str:
    name = raw.decode("latin-1").lower()
    if len(_NAMES) < 256:
        _NAMES[raw] = name
    return name


_TEXTUAL: dict[str | None, bool] = {}  # content type -> whether its bodies go as text (an app uses a few)


def _textual(content_type: str | None) -> bool:
    known = _TEXTUAL.get(content_type)
    if known is None:
        known = _is_text(content_type, False)
        if len(_TEXTUAL) < 256:
            _TEXTUAL[content_type] = known
    return known


def _text_or_base64(body: bytes, content_type: str | None, headers: dict[str, Any]) -> tuple[str, bool]:
    if not body:
        return "", False
    if "content-encoding" not in headers and _textual(content_type):
        try:
            return body.decode(), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def _casings(name: str) -> Any:
    """`set-cookie`, `Set-cookie`, `sEt-cookie`, ...: spellings of one header name, as many as wanted."""

    def spell(rest: str) -> Any:
        if not rest:
            yield ""
            return
        first = rest[0]
        for tail in spell(rest[1:]):
            yield first.lower() + tail
            if first.lower() != first.upper():
                yield first.upper() + tail

    return islice(spell(name), 1 << 16)
