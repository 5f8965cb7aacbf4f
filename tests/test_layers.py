"""The layers of DESIGN §11: each imports only the layers below it, checked in a fresh interpreter."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lambdify

PACKAGE = Path(lambdify.__file__).parent
ORDER = ["core", "isolation", "http", "aws", "function", "cli"]  # each may import only those before it


def modules_of(layer: str) -> list[str]:
    if (PACKAGE / f"{layer}.py").exists():
        return [f"lambdify.{layer}"]
    return [f"lambdify.{layer}.{info.name}" for info in pkgutil.iter_modules([str(PACKAGE / layer)])]


def loaded_after(modules: list[str]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded: list[str] = json.loads(out)
    return loaded


@pytest.mark.parametrize("layer", ORDER[:-1])
def test_a_layer_imported_alone_pulls_in_nothing_from_the_layers_above(layer: str) -> None:
    modules = modules_of(layer)
    assert modules, f"no modules found for layer {layer}"
    above = tuple(f"lambdify.{name}" for name in ORDER[ORDER.index(layer) + 1 :])
    loaded = loaded_after(modules)
    assert set(modules) <= set(loaded)
    assert [name for name in loaded if name.startswith(above)] == []


def test_import_lambdify_loads_no_layer_and_no_asyncio() -> None:
    loaded = loaded_after(["lambdify"])
    assert [name for name in loaded if name.startswith("lambdify.")] == []
    assert not {"asyncio", "starlette", "anyio", "uvicorn"} & set(loaded)


def test_the_sync_path_of_a_handler_loads_no_asyncio_and_no_http_layer() -> None:
    code = (
        "import json, sys\n"
        "from lambdify import handler\n"
        "@handler\n"
        "def echo(event, context): return event\n"
        "assert echo.invoke({'x': 1}) == {'x': 1}\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert not {"asyncio", "starlette", "anyio"} & loaded
    assert not [name for name in loaded if name.startswith(("lambdify.http", "lambdify.aws"))]
