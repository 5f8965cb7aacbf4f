"""How a process-isolated context's child finds the handler: the module, file and name it
imports (`handler_location`), and the guard against a module that invokes its function while a
child imports it for INIT (`init_import`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.engine import Engine


class _InitImport:
    """In an execution-context child: the module that INIT is importing (set by `child.py`).

    A context started from there would import that module again in a new child, which would
    start another, and so on until the first INIT timed out. It is refused at once instead, and
    the first child reports why; a script run without a `__main__` guard is the usual cause.
    """

    module: str | None = None
    refusal: str | None = None

    def refuse(self, name: str) -> None:
        if self.module is None:
            return
        self.refusal = (
            f"{name} was invoked while a process-isolated execution context was importing {self.module} "
            "for INIT: each context imports the handler's module again (as multiprocessing does), so code that "
            'invokes at module level must run under `if __name__ == "__main__":`'
        )
        raise RuntimeError(self.refusal)


init_import = _InitImport()


def handler_location(function: Engine) -> tuple[str, str | None, str]:
    """(module, file, qualname) by which a child imports the handler."""
    owner = function.owner  # (the `Function`, which carries its handler's name and module)
    module_name = getattr(owner, "__module__", None) or ""
    qualname = getattr(owner, "__qualname__", None) or function.config.name
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(
            f"isolation='process' needs a module-level handler: {module_name}.{qualname} is defined inside a "
            "function, so a child process cannot import it"
        )
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if module_name == "__main__" or (module is not None and getattr(module, "__spec__", None) is None):
        if not file:
            raise ValueError(f"isolation='process': cannot locate the module of {qualname} for a child to import")
        return Path(file).stem, file, qualname
    return module_name, None, qualname
