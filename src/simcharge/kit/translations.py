"""gettext catalogs (Babel `.po` files under `simcharge/locales/`), loaded once per language.

Strings are marked for extraction with `N_()` (a no-op: translated later, in the reader's
language) and translated with `translate(language, message)`."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
DOMAIN = "messages"

# Directory names of the catalogs: Babel locale identifiers of our languages.
CATALOG_DIRS: dict[str, str] = {
    "zh-Hans": "zh_Hans",
    "zh-Hant": "zh_Hant",
    "fil": "fil",
    "es": "es",
}


def N_(message: str) -> str:
    """Mark a string for translation without translating it now."""
    return message


@lru_cache(maxsize=16)
def translations(language: str) -> NullTranslations:
    """The catalog for a language (compiled in memory from its `.po`), or a pass-through."""
    folder = CATALOG_DIRS.get(language)
    po = LOCALES_DIR / folder / "LC_MESSAGES" / f"{DOMAIN}.po" if folder else None
    if po is None or not po.exists():
        return NullTranslations()
    with po.open("rb") as fh:
        catalog = read_po(fh, locale=folder)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(fp=buffer, domain=DOMAIN)


def translate(language: str, message: str) -> str:
    return translations(language).gettext(message) if message else message


def translate_plural(language: str, singular: str, plural: str, n: int) -> str:
    return translations(language).ngettext(singular, plural, n)
