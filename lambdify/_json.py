"""One kept C JSON encoder for the package.

`json.dumps` builds a new encoder (and looks up its defaults) on every call; a kept one encodes
a small value in a fraction of the time. It has no circular-reference markers, so a cycle ends in
RecursionError, reported here as json's ValueError. `json` is imported on first use: the AWS
path of a sync handler never needs it at import.
"""

from __future__ import annotations

from typing import Any

encode_chunks: Any = None  # the kept encoder, `encode_chunks(value, 0)` -> pieces of JSON text


def _reject(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def build() -> Any:
    """Make (once) and return the kept encoder: compact separators, as Lambda's runtime writes."""
    global encode_chunks
    import json

    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - pure-Python json
        encode_chunks = lambda value, _level: [json.dumps(value, separators=(",", ":"))]  # noqa: E731
    else:
        encode_chunks = make(None, _reject, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    return encode_chunks


def to_json(value: Any) -> str:
    """Compact JSON text. TypeError/ValueError if `value` is not JSON-serialisable."""
    try:
        return "".join((encode_chunks or build())(value, 0))
    except RecursionError:
        raise ValueError("Circular reference detected") from None
