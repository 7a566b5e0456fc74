"""Typed reading of a card's JSON: every field is checked for its type before any code uses it,
and every error is one line naming the field and the file.

A card's strings reach the terminal, logs and the web page (genre names, the model's name, its
description), so no string anywhere in a card may hold a control character: C0 and C1 controls,
DEL and ESC (terminal escape sequences), format characters such as bidirectional overrides,
line or paragraph separators, and lone surrogates (which cannot even be printed).
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

from postergenre.errors import UserError

# Unicode categories refused in a card's strings: Cc controls (C0, DEL, C1), Cf format
# characters (bidi overrides, zero-width), Cs lone surrogates, Zl and Zp line breaks.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class CardError(UserError):
    """A model card that is missing, unreadable or invalid."""


def _control_character(text: str) -> str | None:
    """The first refused character of `text` as U+XXXX, or None."""
    if text.isprintable():  # the common case, in C
        return None
    for char in text:
        if unicodedata.category(char) in _UNPRINTABLE:
            return f"U+{ord(char):04X}"
    return None


class CardFields:
    """A card's JSON object read field by field; `fail` raises the one-line error."""

    def __init__(self, data: Any, source: str):
        self.source = source
        if not isinstance(data, dict):
            self.fail("", f"must be a JSON object, got {type(data).__name__}")
        self.data: dict[str, Any] = data

    def fail(self, name: str, problem: str) -> None:
        where = f"field {name!r} " if name else ""
        raise CardError(f"{self.source}: {where}{problem}")

    def refuse_control_characters(self) -> None:
        """Refuse a control character in any string or key of the card, naming where."""
        stack: list[tuple[str, Any]] = [("", self.data)]
        while stack:  # iterative: a deeply nested card cannot exhaust the stack here
            where, value = stack.pop()
            if isinstance(value, str):
                found = _control_character(value)
                if found:
                    self.fail(where, f"holds a control character ({found})")
            elif isinstance(value, dict):
                for key, item in value.items():
                    if _control_character(key):
                        self.fail(where, f"has a key holding a control character "
                                  f"({_control_character(key)})")  # fmt: skip
                    stack.append((f"{where}.{key}" if where else key, item))
            elif isinstance(value, list):
                stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))

    def get(self, name: str, default: Any = ..., where: dict[str, Any] | None = None) -> Any:
        data = self.data if where is None else where
        key = name.rsplit(".", 1)[-1]
        if key not in data:
            if default is ...:
                self.fail(name, "is missing")
            return default
        return data[key]

    def text(
        self,
        name: str,
        default: Any = ...,
        choices: tuple[str, ...] | None = None,
        where: dict[str, Any] | None = None,
    ) -> Any:
        """A non-empty string (one of `choices` if given); with default None, null is None."""
        value = self.get(name, default, where)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value:
            self.fail(name, f"must be a non-empty string, got {value!r:.80}")
        if choices is not None and value not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}, got {value!r:.80}")
        return value

    def string(self, name: str, value: Any) -> str:
        """A string that may be empty (a name, a description); null reads as empty."""
        if value is None:
            return ""
        if not isinstance(value, str):
            self.fail(name, f"must be a string, got {type(value).__name__}")
        return value

    def number(self, name: str, value: Any, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, f"must be a number, got {value!r:.80}")
        if not math.isfinite(value) or not low <= value <= high:
            self.fail(name, f"must be between {low:g} and {high:g}, got {value!r}")
        return float(value)

    def numbers(self, name: str, value: Any, n: int, low: float, high: float) -> list[float]:
        """A list of exactly `n` numbers."""
        if not isinstance(value, list) or len(value) != n:
            self.fail(name, f"must be a list of {n} numbers, got {value!r:.80}")
        return [self.number(name, v, low, high) for v in value]

    def integer(self, name: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(name, f"must be an integer from {low} to {high}, got {value!r:.80}")
        return int(value)

    def mapping(self, name: str, default: Any = ..., where: dict[str, Any] | None = None) -> Any:
        """A JSON object (a copy); with default None, null or absent reads as None."""
        value = self.get(name, default, where)
        if value is None and default is None:
            return None
        if not isinstance(value, dict):
            self.fail(name, f"must be a JSON object, got {type(value).__name__}")
        return dict(value)
