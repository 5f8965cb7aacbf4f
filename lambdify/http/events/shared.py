"""What the event codecs share: the fake account, headers, query strings, bodies, times."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Iterator
from urllib.parse import unquote_plus

from ...core.errors import LambdifyError

ACCOUNT_ID = "000000000000"  # the same fake account as Function.arn
API_ID = "lambdify00"
_RESOURCE_ID = "proxy0"
_Raw = list[tuple[bytes, bytes]]


class BadResponse(LambdifyError):
    """The handler's result cannot be mapped to an HTTP response (API Gateway answers 502)."""


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_clock: tuple[int, str] = (-1, "")  # (second, its CLF text): many requests share a second


def _clf_time(now: float) -> str:
    """`12/Mar/2020:19:03:58 +0000`, API Gateway's `time`/`requestTime`, in English whatever the locale."""
    global _clock
    second = int(now)
    cached = _clock
    if cached[0] == second:
        return cached[1]
    t = time.gmtime(second)
    text = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    _clock = (second, text)
    return text


def _domain(host: str | None) -> tuple[str, str]:
    """(domainName, domainPrefix) from the Host header; AWS's never carry a port."""
    host = host or "localhost"
    if ":" in host and host[-1] != "]":  # not a bare "[::1]"
        host = host.rpartition(":")[0]
    return host, host.partition(".")[0]


def _is_text(content_type: str | None, alb: bool) -> bool:
    mime = content_type.partition(";")[0].strip().lower() if content_type else ""
    if not mime or mime.startswith("text/"):
        return True
    if alb:  # ALB's documented list, nothing else
        return mime in ("application/json", "application/javascript", "application/xml")
    return mime.endswith(("/json", "+json", "/xml", "+xml", "/x-www-form-urlencoded")) or "javascript" in mime


def _encode_body(body: bytes, content_type: str | None, alb: bool = False) -> tuple[str, bool]:
    if _is_text(content_type, alb):
        try:
            return body.decode(), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def _query(qs: str, decode: bool) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(last value of each key, all values of each key). API Gateway decodes `+` and `%XX`; ALB nothing."""
    return _last_and_every(_query_pairs(qs, decode))


def _query_pairs(qs: str, decode: bool) -> Iterator[tuple[str, str]]:
    for piece in qs.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        if decode and ("%" in piece or "+" in piece):
            key, value = unquote_plus(key), unquote_plus(value)
        yield key, value


def _headers(raw: _Raw) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(last value of each header, all values of each header)."""
    return _last_and_every((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw)


def _last_and_every(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(the last value of each key, all values of each key, in order)."""
    last: dict[str, str] = {}
    every: dict[str, list[str]] = {}
    for key, value in pairs:
        last[key] = value
        if key in every:
            every[key].append(value)
        else:
            every[key] = [value]
    return last, every
