"""Modules imported on first use, for the commands that never need them.

``symbackprop codegen`` and ``symbackprop chain`` print text from SymPy expressions: NumPy
(0.15-0.2 s CPU to import, a sixth of those commands) is not needed for that, only for
running what is generated, for the tests' references and for the certificate.  A module that
needs NumPy only inside some of its functions names it ``numpy = lazy("numpy")``; the name
behaves as the module (attributes, ``isinstance(x, numpy.ndarray)``) and imports it on the
first attribute read.  Python's own import lock makes that first read safe from several
threads at once.
"""

from __future__ import annotations

import importlib
import types


class LazyModule:
    """A stand-in for the module ``name``: the first attribute read imports it."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: types.ModuleType | None = None

    def __getattr__(self, attribute: str) -> object:
        return getattr(self.module, attribute)

    @property
    def module(self) -> types.ModuleType:
        """The module itself (imported now if it was not)."""
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return self._module

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy(name: str) -> LazyModule:
    """``name`` imported on first use (see the module docstring)."""
    return LazyModule(name)
