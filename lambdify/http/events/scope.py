"""An HTTP event from API Gateway (v2, v1), a Function URL or an ALB, read back into the ASGI
request it stands for: the inverse of `request_event`.

`asgi_scope(source, event)` gives `(scope, body)`: an ASGI 3 HTTP scope (`path` decoded,
`raw_path` as the client sent it where the service keeps it, `query_string` encoded, header
names lower-case, cookies back in one `cookie` header) and the body bytes (base64 decoded when
`isBase64Encoded`). `wsgi.py` makes a WSGI environ of the same two.

Pure functions, stdlib only: this runs for every event.
"""

from __future__ import annotations

import base64
from typing import Any, Final
from urllib.parse import quote, unquote, urlencode

__all__ = ["asgi_scope"]

_ASGI: Final = {"version": "3.0", "spec_version": "2.3"}


def asgi_scope(source: str, event: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """(ASGI scope, request body) for an event of `source` (`http_source(event)`).

    ```python
    scope, body = asgi_scope("v2", event)
    scope["method"], scope["path"], scope["query_string"]   # "GET", "/a b", b"x=1&x=2"
    ```
    """
    if source == "v2":
        scope = _v2(event)
    elif source == "v1":
        scope = _v1(event)
    elif source == "alb" or source == "alb-multi":
        scope = _alb(event, source == "alb-multi")
    else:
        raise ValueError(f"unknown event source {source!r}")
    body = event.get("body")
    if not body:
        return scope, b""
    if event.get("isBase64Encoded"):
        return scope, base64.b64decode(body)
    return scope, body.encode()


def _pairs(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    try:
        return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    except UnicodeEncodeError:
        return [(name.lower().encode("latin-1"), _bytes(value)) for name, value in headers.items()]


def _bytes(text: str) -> bytes:
    """A header value as HTTP carries it: latin-1, or UTF-8 for what latin-1 cannot hold."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


def _scope(
    method: str,
    path: str,
    raw_path: bytes,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    host: str | None,
    forwarded: dict[str, str],
    client_ip: str | None,
) -> dict[str, Any]:
    scheme = forwarded.get("x-forwarded-proto") or "https"
    port_text = forwarded.get("x-forwarded-port")
    port = int(port_text) if port_text and port_text.isdigit() else (443 if scheme == "https" else 80)
    return {
        "type": "http",
        "asgi": _ASGI,
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "root_path": "",
        "query_string": query,
        "headers": headers,
        "client": (client_ip, 0) if client_ip else None,
        "server": (_server_name(host), port),
    }


def _v2(event: dict[str, Any]) -> dict[str, Any]:
    # (Every event takes this path: the scope is made in one literal, without `_scope`'s call.)
    context = event["requestContext"]
    http = context["http"]
    given = event.get("headers") or {}
    try:  # (HTTP API and Function URLs send header names in lower case)
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in given.items()]
    except UnicodeEncodeError:
        headers = _pairs(given)
    cookies = event.get("cookies")
    if cookies:  # HTTP API moved them out of the headers
        headers.append((b"cookie", _bytes("; ".join(cookies))))
    raw_path = event.get("rawPath") or http.get("path") or "/"
    scheme = given.get("x-forwarded-proto") or "https"
    port_text = given.get("x-forwarded-port")
    source_ip = http.get("sourceIp")
    return {
        "type": "http",
        "asgi": _ASGI,
        "http_version": "1.1",
        "method": http["method"],
        "scheme": scheme,
        "path": unquote(raw_path) if "%" in raw_path else raw_path,
        "raw_path": raw_path.encode(),
        "root_path": "",
        "query_string": (event.get("rawQueryString") or "").encode(),
        "headers": headers,
        "client": (source_ip, 0) if source_ip else None,
        "server": (
            _server_name(given.get("host") or context.get("domainName")),
            int(port_text) if port_text and port_text.isdigit() else (443 if scheme == "https" else 80),
        ),
    }


def _server_name(host: str | None) -> str:
    """The Host header without its port (not the end of a bare "[::1]")."""
    if not host:
        return "localhost"
    if ":" not in host:
        return host
    name, _, port = host.rpartition(":")
    return name if port.isdigit() else host


def _quoted(path: str) -> bytes:
    return (quote(path) if not path.isascii() or " " in path or "%" in path else path).encode()


def _v1(event: dict[str, Any]) -> dict[str, Any]:
    multi = event.get("multiValueHeaders")
    single = event.get("headers") or {}
    if multi:
        headers = [
            (name.lower().encode("latin-1"), _bytes(value)) for name, values in multi.items() for value in values
        ]
    else:
        headers = _pairs(single)
    lower = {name.lower(): value for name, value in single.items()}
    # REST decodes the path and the query; encode them again for raw_path and query_string.
    path = event.get("path") or "/"
    query_values = event.get("multiValueQueryStringParameters")
    if query_values:
        query = urlencode([(key, value) for key, values in query_values.items() for value in values])
    else:
        query = urlencode(event.get("queryStringParameters") or {})
    identity = event["requestContext"].get("identity") or {}
    return _scope(
        event["httpMethod"],
        path,
        _quoted(path),
        query.encode(),
        headers,
        lower.get("host"),
        lower,
        identity.get("sourceIp"),
    )


def _alb(event: dict[str, Any], multi: bool) -> dict[str, Any]:
    # ALB decodes neither the path nor the query: both arrive as the client sent them.
    if multi:
        given = event.get("multiValueHeaders") or {}
        headers = [
            (name.lower().encode("latin-1"), _bytes(value)) for name, values in given.items() for value in values
        ]
        lower = {name.lower(): values[-1] for name, values in given.items() if values}
        params = event.get("multiValueQueryStringParameters") or {}
        query = "&".join(f"{key}={value}" for key, values in params.items() for value in values)
    else:
        single = event.get("headers") or {}
        headers = _pairs(single)
        lower = {name.lower(): value for name, value in single.items()}
        params = event.get("queryStringParameters") or {}
        query = "&".join(f"{key}={value}" for key, value in params.items())
    raw_path = event.get("path") or "/"
    path = unquote(raw_path) if "%" in raw_path else raw_path
    forwarded_for = lower.get("x-forwarded-for")
    client = forwarded_for.split(",")[0].strip() if forwarded_for else None
    return _scope(
        event["httpMethod"], path, raw_path.encode(), query.encode(), headers, lower.get("host"), lower, client
    )
