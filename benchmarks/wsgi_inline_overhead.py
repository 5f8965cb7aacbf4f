"""In-process cost of WSGIMiddleware's inline path (main thread) per request, on a trivial WSGI app.

    python benchmarks/wsgi_inline_overhead.py

Prints the best of 5 rounds of 20,000 requests for the bare app and the wrapped one, three times.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable, Iterable
from typing import Any

from lambdify import WSGIMiddleware

ENVIRON = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def served(wsgi: Callable[..., Iterable[bytes]]) -> Callable[[], None]:
    def once() -> None:
        body = wsgi(ENVIRON, start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    return once


def main() -> None:
    bare, wrapped = served(app), served(WSGIMiddleware(app))
    bare()
    wrapped()
    for _ in range(3):
        b = min(timeit.repeat(bare, number=20000, repeat=5)) / 20000 * 1e6
        w = min(timeit.repeat(wrapped, number=20000, repeat=5)) / 20000 * 1e6
        print(f"bare {b:.2f} us  wrapped {w:.2f} us  overhead {w - b:.2f} us")


if __name__ == "__main__":
    main()
