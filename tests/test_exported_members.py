"""`lambdify.__all__` is the public API, complete and importable (as httpx checks its own)."""

from __future__ import annotations
import __future__

import types

import lambdify

DESIGN_NAMES = {
    "handler",
    "Function",
    "ExecutionContext",
    "LambdaContext",
    "current_context",
    "LambdifyError",
    "FunctionError",
    "InvocationTimeout",
    "MemoryLimitExceeded",
    "InitError",
    "TooManyRequests",
    "stats",
    "lambda_handler",
}


def test_all_imports_are_exported() -> None:
    public = {
        name
        for name, value in vars(lambdify).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)  # `from __future__ import annotations`
    }

    # Names the package provides lazily (the HTTP surfaces) are in __all__ but not yet in vars().
    assert public <= set(lambdify.__all__)
    assert set(lambdify.__all__) <= set(dir(lambdify))


def test_every_name_in_all_is_importable() -> None:
    for name in lambdify.__all__:
        namespace: dict[str, object] = {}
        exec(f"from lambdify import {name}", namespace)  # the import statement itself is the test
        assert namespace[name] is getattr(lambdify, name)


def test_all_has_no_duplicates() -> None:
    assert len(lambdify.__all__) == len(set(lambdify.__all__))


def test_all_contains_the_design_names() -> None:
    assert DESIGN_NAMES <= set(lambdify.__all__)
