"""`lambda_context`: the LambdaContext of a request as a FastAPI dependency.

Its own module, because FastAPI reads the `Request` annotation at run time: importing Starlette
is paid only by the applications that use it.
"""

from __future__ import annotations

from starlette.requests import Request

from ..core.lambda_context import LambdaContext
from .asgi_middleware import SCOPE_KEY

__all__ = ["lambda_context"]


def lambda_context(request: Request) -> LambdaContext:
    """The LambdaContext of a Starlette/FastAPI request (usable as a FastAPI dependency).

    ```python
    @app.get("/")
    def index(context: LambdaContext = Depends(lambda_context)): ...
    ```
    """
    context: LambdaContext = request.scope[SCOPE_KEY]
    return context
