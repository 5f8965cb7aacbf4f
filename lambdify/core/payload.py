"""Lambda's payload rules: what is JSON as Lambda's runtime has it, and the size limits
(6 MB for a synchronous request, 1 MB for an `Event`, a response 100 bytes more than a request)."""

from __future__ import annotations

from typing import Any, Final

from . import marshal as _json

_SCALARS: Final = frozenset((str, int, bool, float))  # exact types: JSON whatever their value
# Lambda's payload limits: "Request must be smaller than 6291456 bytes for the InvokeFunction
# operation" (1 MB for `Event`); a response may be 100 bytes more ("Response payload size (N bytes)
# exceeded maximum allowed payload size (6291556 bytes).", Function.ResponseSizeTooLarge).
MAX_REQUEST: Final = 6 * 1024 * 1024
MAX_EVENT_REQUEST: Final = 1024 * 1024
MAX_RESPONSE: Final = MAX_REQUEST + 100
_SMALL_INT: Final = 1 << 64  # an int below this in magnitude takes at most 21 characters


def ensure_json(obj: Any) -> int:
    """Raise TypeError/ValueError unless Lambda's runtime would marshal `obj`; else an upper bound
    of the bytes of its JSON (exact unless `obj` is a scalar or a plain object, `_plain_object`)."""
    if obj is None:
        return 4
    kind = type(obj)
    if kind is str:
        return 6 * len(obj) + 2
    if kind in _SCALARS and (kind is not int or -_SMALL_INT < obj < _SMALL_INT):
        return 24
    if kind is dict:
        bound = _plain_object(obj)
        if bound >= 0:
            return bound
    return _json.check(obj)


def _plain_object(obj: dict[Any, Any]) -> int:
    """An upper bound of the size of the JSON of `obj` if it is surely JSON: string keys, and values
    that are scalars, or objects or arrays of scalars (what an HTTP handler usually returns); else -1.
    Checked in Python, this costs a hello-world `fn.asgi` request 2-3% less than the C encoder's
    code, which nothing else in a server keeps warm. -1 means "ask the encoder", not "not JSON".

    The bound: 6 bytes a character of text (`\\u0000`), and 30 an entry (a key's quotes and
    separators, and a scalar: an int is plain below 2**64, 21 characters; a float takes 24)."""
    chars = 0
    entries = len(obj) + 1
    for key, value in obj.items():
        if type(key) is not str:
            return -1
        chars += len(key)
        if value is None:
            continue
        kind = type(value)
        if kind is str:
            chars += len(value)
        elif kind in _SCALARS:
            if kind is int and not -_SMALL_INT < value < _SMALL_INT:
                return -1
        elif kind is dict:
            entries += len(value)
            for inner_key, inner in value.items():
                if type(inner_key) is not str:
                    return -1
                chars += len(inner_key)
                if inner is None:
                    continue
                kind = type(inner)
                if kind is str:
                    chars += len(inner)
                elif kind not in _SCALARS or (kind is int and not -_SMALL_INT < inner < _SMALL_INT):
                    return -1
        elif kind is list:
            entries += len(value)
            for inner in value:
                if inner is None:
                    continue
                kind = type(inner)
                if kind is str:
                    chars += len(inner)
                elif kind not in _SCALARS or (kind is int and not -_SMALL_INT < inner < _SMALL_INT):
                    return -1
        else:
            return -1
    return 6 * chars + 30 * entries


def check_event(event: Any, limit: int = MAX_REQUEST) -> None:
    """TypeError unless `event` is JSON as Lambda's runtime has it; ValueError naming both sizes if
    its JSON is over `limit` bytes (Lambda's RequestTooLargeException). The JSON is measured only
    when the cheap bound of `ensure_json` passes the limit."""
    try:
        size = ensure_json(event)
        if size > limit:
            size = len(_json.marshal(event))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the event must be JSON-serialisable: {exc}") from None
    if size > limit:
        raise ValueError(
            f"the event is {size} bytes of JSON, over Lambda's limit of {limit} bytes for a synchronous "
            "invocation (RequestTooLargeException)"
        )


def too_large(size: int) -> str:
    """The message of `Function.ResponseSizeTooLarge` for a result of `size` bytes of JSON."""
    return f"Response payload size ({size} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE} bytes)."
