"""Lazy attribute loading for package ``__init__`` modules (PEP 562).

A package lists its public names and the submodule each lives in; a name is imported on first
access. ``import imharmony`` and the command line's start-up then cost only what is used (the CLI
answering ``--help`` does not import scikit-learn, SimpleITK or statsmodels).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["attach"]


def attach(
    package: str, names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Return ``__getattr__``, ``__dir__`` and ``__all__`` for ``package``.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    names : dict
        Public name -> submodule (relative to ``package``, e.g. ``".features.estimators"``).
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            # a public subpackage or submodule (``imharmony.calibration``) is reachable as an
            # attribute without importing it first, as after an eager ``import``
            if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}"):
                return importlib.import_module(f"{package}.{name}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        globals_ = importlib.import_module(package).__dict__
        globals_[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(names)

    # A public function may share its name with the submodule that defines it (``resample`` in
    # ``imaging/resample.py``). Importing a submodule sets it as an attribute of the package; keep
    # the public object there instead, exactly as an eager ``from .resample import resample``
    # would. The submodule itself stays reachable through ``sys.modules`` and ``from ... import``.
    class _Package(types.ModuleType):
        def __setattr__(self, key: str, value: Any) -> None:
            if (
                isinstance(value, types.ModuleType)
                and key in names
                and value.__name__ == f"{package}.{key}"
            ):
                value = getattr(importlib.import_module(names[key], package), key)
            super().__setattr__(key, value)

    sys.modules[package].__class__ = _Package
    return __getattr__, __dir__, sorted(names)
