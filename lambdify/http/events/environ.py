"""A WSGI environ (PEP 3333) for the request an HTTP event stands for, made from its ASGI scope
(`scope.asgi_scope`): one reading of the event serves both kinds of app."""

from __future__ import annotations

import io
import sys
from typing import Any

__all__ = ["wsgi_environ"]


def wsgi_environ(scope: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The environ a WSGI server would build for `scope` and `body`.

    ```python
    environ = wsgi_environ(*asgi_scope("v1", event))
    environ["PATH_INFO"], environ["QUERY_STRING"], environ["HTTP_COOKIE"]
    ```
    """
    server_name, server_port = scope["server"]
    client = scope.get("client")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", ""),
        # PEP 3333: the decoded path, its bytes as latin-1 text
        "PATH_INFO": scope["path"].encode().decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "RAW_URI": scope["raw_path"].decode("latin-1"),
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "REMOTE_ADDR": client[0] if client else "",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope["scheme"],
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,  # (Lambda runs many environments, each one request at a time)
        "wsgi.run_once": False,
    }
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        if key == "content-type":
            environ["CONTENT_TYPE"] = text
            continue
        if key == "content-length":
            continue  # (the body's own length is set above: it is what the app can read)
        key = "HTTP_" + key.upper().replace("-", "_")
        previous = environ.get(key)
        if previous is None:
            environ[key] = text
        else:  # repeated headers: joined, as servers do (cookies with "; ")
            environ[key] = f"{previous}; {text}" if key == "HTTP_COOKIE" else f"{previous},{text}"
    return environ
