"""Loading TARGETs: `module:attr`, `path/to/file.py:attr`, or `path/to/file.py` (every Function in it)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


class TargetError(Exception):
    """A TARGET that cannot be loaded; the message says why in one line."""


def import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise TargetError(f"{path}: no such file")
    name = path.stem
    if not name.isidentifier():
        raise TargetError(f"{path}: {name!r} is not a valid module name")
    existing = sys.modules.get(name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path.resolve():
        return existing
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        raise TargetError(f"{path}: import failed: {type(exc).__name__}: {exc}") from exc
    return module


def import_module_named(name: str) -> ModuleType:
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise TargetError(f"{name}: no such module") from exc
        raise TargetError(f"{name}: import failed: {type(exc).__name__}: {exc}") from exc
    except BaseException as exc:
        raise TargetError(f"{name}: import failed: {type(exc).__name__}: {exc}") from exc


def _module(spec: str) -> ModuleType:
    return import_file(Path(spec)) if spec.endswith(".py") else import_module_named(spec)


def load_attribute(target: str) -> Any:
    """`module:attr` or `file.py:attr` → the object (dotted attributes allowed)."""
    module_spec, sep, attr = target.rpartition(":")
    if not sep or not module_spec or not attr:
        raise TargetError(f"{target}: expected 'module:attribute' or 'file.py:attribute'")
    obj: Any = _module(module_spec)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{target}: {module_spec} has no attribute {attr!r}") from None
    return obj
