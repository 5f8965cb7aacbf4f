"""lambdify: the AWS Lambda execution model for any Python web stack.

```python
from lambdify import handler

@handler(timeout=5)
def hello(event, context):
    return {"message": f"Hello, {event.get('name', 'world')}!"}

hello.invoke({"name": "Ada"})
```
"""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "ExecutionContext",
    "Function",
    "FunctionError",
    "InitError",
    "InvocationTimeout",
    "LambdaContext",
    "LambdifyError",
    "MemoryLimitExceeded",
    "TooManyRequests",
    "current_context",
    "handler",
]
