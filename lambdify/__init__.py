"""lambdify: the AWS Lambda execution model for any Python web stack.

```python
from lambdify import handler

@handler(timeout=5)
def hello(event, context):
    return {"message": f"Hello, {event.get('name', 'world')}!"}

hello.invoke({"name": "Ada"})
```

Every public name is loaded on first use (module `__getattr__`): `import lambdify` costs
almost nothing, a layer can be imported without the layers above it, and the HTTP surfaces
(asyncio) load only when asked for.
"""

import typing as _typing

if _typing.TYPE_CHECKING:
    from .aws.lambda_handler import lambda_handler as lambda_handler
    from .core.context import ExecutionContext as ExecutionContext
    from .core.current import current_context as current_context
    from .core.errors import FunctionError as FunctionError
    from .core.errors import InitError as InitError
    from .core.errors import InvocationTimeout as InvocationTimeout
    from .core.errors import LambdifyError as LambdifyError
    from .core.errors import MemoryLimitExceeded as MemoryLimitExceeded
    from .core.errors import TooManyRequests as TooManyRequests
    from .core.lambda_context import LambdaContext as LambdaContext
    from .function import Function as Function
    from .function import handler as handler
    from .function import stats as stats
    from .http.app import FunctionApp as FunctionApp
    from .http.asgi_middleware import ASGIMiddleware as ASGIMiddleware
    from .http.wsgi_middleware import WSGIMiddleware as WSGIMiddleware

__version__ = "0.1.0"

_WHERE = {
    "ExecutionContext": "core.context",
    "LambdaContext": "core.lambda_context",
    "current_context": "core.current",
    "FunctionError": "core.errors",
    "InitError": "core.errors",
    "InvocationTimeout": "core.errors",
    "LambdifyError": "core.errors",
    "MemoryLimitExceeded": "core.errors",
    "TooManyRequests": "core.errors",
    "lambda_handler": "aws.lambda_handler",
    "Function": "function",
    "handler": "function",
    "stats": "function",
    "FunctionApp": "http.app",
    "ASGIMiddleware": "http.asgi_middleware",
    "WSGIMiddleware": "http.wsgi_middleware",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'lambdify' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # (found once: later lookups are plain module attributes)
    return value


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
    "lambda_handler",
    "stats",
]
