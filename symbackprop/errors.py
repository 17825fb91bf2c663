"""Errors that mean "the user's input is wrong" (CLI exit status 2).

Every message names the field it is about: ``layers[1].units: expected a positive
integer, got -3``.  Anything else that escapes is a bug in symbackprop.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a spec field, an expression, a data file or a CLI argument."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)
