"""Errors that mean "the user's input is wrong" (CLI exit status 2).

Every message names the field it is about: ``layers[1].units: expected a positive
integer, got -3``, and is one line: characters that would break or garble it (a newline in
a JSON key, a lone surrogate) are shown escaped.  Anything else that escapes is a bug in
symbackprop.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a spec field, an expression, a data file or a CLI argument."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = one_line(str(field))
        self.problem = one_line(str(problem))
        super().__init__(f"{self.field}: {self.problem}" if self.field else self.problem)


def one_line(text: str) -> str:
    """``text`` with every character that is not printable (newlines, other line breaks,
    control characters, lone surrogates) written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis when cut.

    For echoing user input (a name, a string value, a path) in a one-line message.
    """
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cut_list(items: object, shown: int = 5) -> str:
    """The first ``shown`` items joined by commas, then "… and N more" if there are more."""
    items = [str(item) for item in items]  # type: ignore[attr-defined]
    head = ", ".join(shorten(item) for item in items[:shown])
    rest = len(items) - shown
    return head if rest <= 0 else f"{head} … and {rest:,} more"
