"""Strings no database or answer can carry: a NUL (PostgreSQL refuses it in text) or a lone
surrogate (Python's JSON reads `"\\ud800"`; it has no UTF-8). Found in JSON bodies by the
middleware, in verified provider notifications by the webhooks."""

from __future__ import annotations

from typing import Any


def not_text(value: str) -> bool:
    """Whether `value` holds a NUL or a lone surrogate."""
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_only(value: str) -> str:
    """`value` fit for a log line or a field name: NULs dropped, a lone surrogate replaced."""
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def first_not_text(value: Any, path: str = "") -> str | None:
    """The dotted path (`data.object.name`; `body` for the whole) of the first string or key in
    `value` (dicts, lists, strings) that is no text, if any; the path itself made text."""
    if isinstance(value, str):
        return (path or "body") if not_text(value) else None
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            named = f"{path}.{key}".strip(".")
            if not_text(str(key)):
                return text_only(named) or "body"
            items.append((named, item))
    elif isinstance(value, list):
        items = [(f"{path}.{i}".strip("."), item) for i, item in enumerate(value)]
    for named, item in items:
        found = first_not_text(item, named)
        if found is not None:
            return found
    return None
