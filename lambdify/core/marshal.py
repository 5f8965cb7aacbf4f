"""JSON as AWS Lambda's Python runtime writes it, with kept C encoders for speed.

The runtime client (awslambdaric, `lambda_runtime_marshaller.py`) encodes a result with
simplejson: `Decimal` as the number it spells (a NaN one as `NaN`), `bytes` inside a value
decoded as UTF-8, anything with an `_asdict()` (a namedtuple) as an object, tuples as arrays,
NaN/Infinity allowed, `", "` and `": "` separators, and raw Unicode on the python3.12+
runtimes (`\\u` escapes before). A result that is itself `bytes` is sent as it is.

`json.dumps` builds a new encoder (and looks up its defaults) on every call; a kept C one
encodes a small value in a fraction of the time. It writes exactly what simplejson does for
values built of exact `dict`/`list`/`str`/`int`/`float`/`bool`/`None`, which a walk over the
value confirms first; anything else goes through `_slow`, a small encoder written down from
simplejson's rules. The C encoders keep no circular-reference markers, so a cycle ends in
RecursionError, reported here as json's ValueError. `json` is imported on first use: the AWS
path of a sync handler never needs it at import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, Final

encode_chunks: Any = None  # the check: Lambda's separators, ASCII; `encode_chunks(value, 0)` -> pieces of JSON text
_compact: Any = None  # compact ASCII, for the process channel
_wire: Any = None  # Lambda's runtime: `", "`/`": "`, raw Unicode or not as `wire_ascii()` says
_ascii = True  # what `_wire` was built with
_decimal: Any = None  # the `decimal.Decimal` class, once imported

_EXACT: Final = frozenset((str, int, float, bool, type(None)))


def _reject(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


class _Unsure(Exception):
    """The C encoder met a value it cannot judge alone (the check goes on in `_slow`)."""


def _check_default(obj: Any) -> Any:
    """`default` of the checking encoder: bytes inside a value are text, as simplejson has them."""
    if isinstance(obj, bytes):
        return obj.decode("utf-8")  # UnicodeDecodeError (a ValueError), as simplejson's
    raise _Unsure


def wire_ascii() -> bool:
    """Whether Lambda's runtime escapes non-ASCII text: awslambdaric writes raw Unicode when
    `AWS_EXECUTION_ENV` names a python3.12+ runtime. Off AWS, the runtime of this Python."""
    env = os.environ.get("AWS_EXECUTION_ENV")
    if env is not None:
        prefix = "AWS_Lambda_python3."
        minor = env[len(prefix) :] if env.startswith(prefix) else ""
        return not (minor.isdigit() and int(minor) >= 12)
    return sys.version_info < (3, 12)


def build() -> Any:
    """Make (again) the kept encoders; return the compact one."""
    global encode_chunks, _compact, _wire, _ascii, _decimal
    import decimal
    import json

    _decimal = decimal.Decimal
    _ascii = wire_ascii()
    quote = json.encoder.encode_basestring_ascii if _ascii else json.encoder.encode_basestring
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - pure-Python json
        encode_chunks = lambda value, _level: [_slow(value, True, ", ", ": ")]  # noqa: E731
        _compact = lambda value, _level: [_slow(value, True, ",", ":")]  # noqa: E731
        _wire = lambda value, _level: [_slow(value, _ascii, ", ", ": ")]  # noqa: E731
    else:
        ascii_quote = json.encoder.encode_basestring_ascii
        encode_chunks = make(None, _check_default, ascii_quote, None, ": ", ", ", False, False, True)
        _compact = make(None, _reject, ascii_quote, None, ":", ",", False, False, True)
        _wire = make(None, _reject, quote, None, ": ", ", ", False, False, True)
    return encode_chunks


def _exact(obj: Any) -> bool:
    """Whether `obj` is built of exact JSON types only (where the C encoder writes simplejson's text)."""
    kind = type(obj)
    if kind is dict:
        for key, value in obj.items():
            if type(key) not in _EXACT or (type(value) not in _EXACT and not _exact(value)):
                return False
        return True
    if kind is list:
        for value in obj:
            if type(value) not in _EXACT and not _exact(value):
                return False
        return True
    return kind in _EXACT


def check(value: Any) -> int:
    """TypeError/ValueError unless Lambda's runtime would marshal `value`; else the length of its
    JSON with `\\u` escapes, at least the bytes the runtime posts (nothing is joined)."""
    try:
        return sum(map(len, (encode_chunks or build())(value, 0)))
    except (_Unsure, TypeError):
        # A Decimal, or a key or an object only simplejson takes (bytes keys, `_asdict()`): its verdict stands.
        return len(_slow(value, True, ", ", ": "))
    except RecursionError:
        raise ValueError("Circular reference detected") from None


def to_json(value: Any) -> str:
    """Compact ASCII JSON with the runtime's types (the process channel). TypeError/ValueError if not JSON."""
    if _compact is None:
        build()
    try:
        if _exact(value):
            return "".join(_compact(value, 0))
    except RecursionError:
        raise ValueError("Circular reference detected") from None
    return _slow(value, True, ",", ":")


def marshal(value: Any) -> bytes:
    """The bytes Lambda's runtime posts for a result: `bytes` as they are, anything else as its JSON."""
    if isinstance(value, bytes):
        return value
    if _wire is None:
        build()
    try:
        text = "".join(_wire(value, 0)) if _exact(value) else _slow(value, _ascii, ", ", ": ")
    except RecursionError:
        raise ValueError("Circular reference detected") from None
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: awslambdaric fails to post it; escape it instead
        return _slow(value, True, ", ", ": ").encode()


def _slow(value: Any, ascii: bool, item_sep: str, key_sep: str) -> str:
    """simplejson's encoding (as awslambdaric configures it), written out; any value."""
    import json

    if _decimal is None:
        build()
    quote: Callable[[str], str] = json.encoder.encode_basestring_ascii if ascii else json.encoder.encode_basestring
    decimal_type = _decimal
    markers: set[int] = set()

    def number(o: float) -> str:
        if o != o:
            return "NaN"
        if o == float("inf"):
            return "Infinity"
        if o == -float("inf"):
            return "-Infinity"
        return float.__repr__(o)

    def key_text(key: Any) -> str:
        if isinstance(key, str):
            return key
        if isinstance(key, bytes):
            return key.decode("utf-8")
        if isinstance(key, float):
            return number(key)
        if key is True:
            return "true"
        if key is False:
            return "false"
        if key is None:
            return "null"
        if isinstance(key, int):
            return int.__repr__(key)
        raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")

    def container(o: Any, items: Iterator[Any], is_object: bool) -> Iterator[str]:
        marker = id(o)
        if marker in markers:
            raise ValueError("Circular reference detected")
        markers.add(marker)
        yield "{" if is_object else "["
        first = True
        for item in items:
            if not first:
                yield item_sep
            first = False
            if is_object:
                key, item = item
                yield quote(key_text(key))
                yield key_sep
            yield from encode(item)
        yield "}" if is_object else "]"
        markers.discard(marker)

    def encode(o: Any) -> Iterator[str]:
        if isinstance(o, str):
            yield quote(o)
        elif isinstance(o, bytes):
            yield quote(o.decode("utf-8"))
        elif o is None:
            yield "null"
        elif o is True:
            yield "true"
        elif o is False:
            yield "false"
        elif isinstance(o, int):
            yield int.__repr__(o)
        elif isinstance(o, float):
            yield number(o)
        elif callable(as_dict := getattr(o, "_asdict", None)):
            fields = as_dict()
            if not isinstance(fields, dict):
                raise TypeError(f"_asdict() must return a dict, not {type(fields).__name__}")
            yield from container(fields, iter(fields.items()), True)
        elif isinstance(o, list | tuple):
            yield from container(o, iter(o), False)
        elif isinstance(o, dict):
            yield from container(o, iter(o.items()), True)
        elif isinstance(o, decimal_type):
            yield "NaN" if o.is_nan() else str(o)
        else:
            _reject(o)

    try:
        return "".join(encode(value))
    except RecursionError:
        raise ValueError("Circular reference detected") from None
