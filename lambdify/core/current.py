"""The invocation running in this task or thread, and request ids (the bottom of the engine)."""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final

from . import hooks

if TYPE_CHECKING:
    from .lambda_context import LambdaContext

__all__ = ["current_context", "new_request_id"]

_current: ContextVar[LambdaContext] = ContextVar("lambdify.current_context")

_IDS_PER_BATCH: Final = 256
_VARIANT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
_ids: list[str] = []  # request ids made ahead, taken from the end
hooks.at_fork(_ids.clear)  # a forked worker must not repeat its parent's ids


def new_request_id() -> str:
    """A random uuid4-format string, as Lambda's request ids are.

    Made 256 at a time from one `os.urandom` read: in a server, making each one on its own
    (random bits, then formatting a 128-bit number) ran code that nothing else keeps warm, and
    cost a hello-world `fn.asgi` request several percent; taking one from a list costs nothing.
    """
    try:
        return _ids.pop()
    except IndexError:
        _make_ids()
        return _ids.pop()


def _make_ids() -> None:
    text = os.urandom(16 * _IDS_PER_BATCH).hex()
    variant = _VARIANT
    made = [
        f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:32]}"
        for h in (text[i : i + 32] for i in range(0, len(text), 32))
    ]
    _ids.extend(made)  # (one call: threads taking ids meanwhile never see a half-filled batch)


def current_context() -> LambdaContext:
    """The LambdaContext of the invocation running in this task or thread.

    ```python
    def helper():
        current_context().defer(audit, "done")
    ```
    Raises `LookupError` outside an invocation.
    """
    context = _current.get(None)
    if context is None:
        raise LookupError("current_context() called outside a lambdify invocation")
    return context
