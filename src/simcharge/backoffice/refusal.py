"""What a page knows of a refused form on it (`form_error` in the back office's templates);
`forms.in_place` makes one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FormError:
    """One refused form, as the page shows it again (`form_error` in the templates)."""

    form: str
    """The refused form's id on the page (`adjust-<line id>`); its fields' ids are
    `<form>-<name>`."""
    summary: str
    """The sentence above the form."""
    fields: dict[str, str] = field(default_factory=dict)
    """Each offending field of the form, and what is wrong with it."""
    values: dict[str, Any] = field(default_factory=dict)
    """What was typed, secrets left out."""
    status: int = 422

    def is_for(self, form: str) -> bool:
        return self.form == form

    def value(self, form: str, name: str, default: Any = "") -> Any:
        """What was typed in `name`, when `form` is the refused one; else `default`."""
        return self.values.get(name, default) if self.form == form else default

    def message(self, form: str, name: str) -> str | None:
        return self.fields.get(name) if self.form == form else None


class NoRefusal(FormError):
    """What a page drawn without a refusal has as `form_error`: no form is the refused one."""

    def __init__(self) -> None:
        super().__init__(form="", summary="")

    def is_for(self, form: str) -> bool:
        return False


NO_REFUSAL = NoRefusal()
