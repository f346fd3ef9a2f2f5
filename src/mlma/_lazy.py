"""Package attributes imported on first use (PEP 562), so that importing a package stays cheap.

``mlma --help`` must not pay for FastAPI and SQLAlchemy (``mlma.api``), and ``mlma status`` must be able to
import a light module of ``mlma.store`` without the store itself. A package declares where each public name
lives and hands the two module hooks this returns to Python:

>>> import types
>>> pkg = types.ModuleType("pkg")
>>> pkg.__getattr__, pkg.__dir__ = lazy_attributes(pkg.__dict__, {"json": ("dumps",)})
>>> pkg.dumps([1])
'[1]'
>>> "dumps" in pkg.__dict__          # cached: the next access is a plain attribute
True
>>> pkg.loads
Traceback (most recent call last):
...
AttributeError: module 'pkg' has no attribute 'loads'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def lazy_attributes(namespace: MutableMapping[str, Any], homes: Mapping[str, tuple[str, ...]]
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package whose ``namespace`` (its ``globals()``)
    gets each name of ``homes`` (module -> names) from that module when first asked for."""
    home_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = home_of.get(name)
        if module is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(home_of))

    return __getattr__, __dir__
