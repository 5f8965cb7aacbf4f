"""lambdify: the AWS Lambda execution model for any Python web stack.

```python
from lambdify import handler

@handler(timeout=5)
def hello(event, context):
    return {"message": f"Hello, {event.get('name', 'world')}!"}

hello.invoke({"name": "Ada"})
```
"""

import typing as _typing

from .context import ExecutionContext as ExecutionContext
from .context import LambdaContext as LambdaContext
from .context import current_context as current_context
from .errors import FunctionError as FunctionError
from .errors import InitError as InitError
from .errors import InvocationTimeout as InvocationTimeout
from .errors import LambdifyError as LambdifyError
from .errors import MemoryLimitExceeded as MemoryLimitExceeded
from .errors import TooManyRequests as TooManyRequests
from .function import Function as Function
from .function import handler as handler
from .function import stats as stats

if _typing.TYPE_CHECKING:
    from .app import FunctionApp as FunctionApp
    from .asgi import ASGIMiddleware as ASGIMiddleware
    from .wsgi import WSGIMiddleware as WSGIMiddleware

_LAZY = {"FunctionApp": "app", "ASGIMiddleware": "asgi", "WSGIMiddleware": "wsgi"}

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The HTTP surfaces import asyncio; `import lambdify` (e.g. on AWS) need not pay for them.
    module = _LAZY.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module 'lambdify' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ASGIMiddleware",
    "ExecutionContext",
    "Function",
    "FunctionApp",
    "FunctionError",
    "InitError",
    "InvocationTimeout",
    "LambdaContext",
    "LambdifyError",
    "MemoryLimitExceeded",
    "TooManyRequests",
    "WSGIMiddleware",
    "current_context",
    "handler",
    "stats",
]
