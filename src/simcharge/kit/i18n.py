"""Languages simcharge speaks, and choosing one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from babel import Locale, localedata
from babel.core import get_global

LANGUAGES: tuple[str, ...] = ("en", "zh-Hans", "zh-Hant", "fil", "es")
"""Every text a customer reads exists in each of these (BCP 47 tags)."""

DEFAULT_LANGUAGE = "en"
"""The last resort, when even the operator's `SIMCHARGE_DEFAULT_LANGUAGE` is not one of ours."""

# Babel locale identifiers for formatting money, dates and numbers.
BABEL_LOCALES: dict[str, str] = {
    "en": "en",
    "zh-Hans": "zh_Hans_CN",
    "zh-Hant": "zh_Hant_TW",
    "fil": "fil_PH",
    "es": "es",
}

_ALIASES: dict[str, str] = {
    "zh": "zh-Hans",
    "zh-cn": "zh-Hans",
    "zh-sg": "zh-Hans",
    "zh-hans": "zh-Hans",
    "zh-tw": "zh-Hant",
    "zh-hk": "zh-Hant",
    "zh-mo": "zh-Hant",
    "zh-hant": "zh-Hant",
    "tl": "fil",
    "fil": "fil",
    "es": "es",
    "en": "en",
}


_CHINESE = frozenset({"zh", "cmn", "yue"})
_TRADITIONAL = frozenset({"hant", "tw", "hk", "mo", "yue"})


def normalize_language(tag: str | None) -> str | None:
    """A supported language for a BCP 47 tag (`zh-TW` → `zh-Hant`, `es-MX` → `es`), or None."""
    if not tag:
        return None
    lowered = tag.strip().replace("_", "-").lower()
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    parts = lowered.split("-")
    if parts[0] in _CHINESE:
        # Any subtag saying Traditional (script or region; Cantonese is written in it) wins:
        # `zh-Hant-HK`, `zh-cmn-Hant`, `zh-yue`, `yue-HK`, `cmn-TW`; else Simplified.
        if parts[0] == "yue" or _TRADITIONAL.intersection(parts[1:]):
            return "zh-Hant"
        return "zh-Hans"
    return _ALIASES.get(parts[0])


def spoken(language: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """`language` if we speak it, else `default` (the operator's setting) if we speak that,
    else English."""
    if language is not None and language in LANGUAGES:
        return language
    return default if default in LANGUAGES else DEFAULT_LANGUAGE


def negotiate_language(accept_language: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """The best supported language for an `Accept-Language` header."""
    for tag in _preferred(accept_language or ""):
        found = normalize_language(tag)
        if found:
            return found
    return default


def pick_language(
    *chosen: str | None, accept_language: str | None, default: str = DEFAULT_LANGUAGE
) -> str:
    """The reader's language: the first of their explicit choices (`?lang=`, a cookie, their
    account's) that we speak, else the best match for their `Accept-Language`, else the
    operator's `default` (`SIMCHARGE_DEFAULT_LANGUAGE`) if we speak it, else English."""
    for choice in chosen:
        found = normalize_language(choice)
        if found:
            return found
    return negotiate_language(accept_language, spoken(None, default))


def pick_text(texts: Mapping[str, str], language: str) -> str:
    """The text in `language`, else English, else any."""
    return texts.get(language) or texts.get(DEFAULT_LANGUAGE) or next(iter(texts.values()), "")


REGIONAL_FORMATS = frozenset({"es"})
"""Languages written with one translation but numbers, money and dates in the reader's region:
Spanish is read from Madrid to Mexico City, Los Angeles and Manila, and half of them write
`12,50` (`es`, `es-AR`, `es-CO`) while the other half write `12.50` (`es-MX`, `es-419`,
`es-US`, `es-PH`). One translation (`es`) serves them all; its numbers follow the region."""

_REGION = re.compile(r"[a-z]{2}|[0-9]{3}")


def format_locale(language: str, accept_language: str | None = None) -> str:
    """The Babel locale a reader of `language` writes and reads numbers, money and dates in:
    the language's own (`BABEL_LOCALES`) — or, for a language of `REGIONAL_FORMATS`, its
    regional variant named by the browser's `Accept-Language` (the first tag in it, by
    preference, of that language with a region Babel knows: `es-MX` → `es_MX`, `es-419` →
    `es_419`). `es-ES`, a bare `es`, no header or an unknown region: the language's own,
    unchanged."""
    own = BABEL_LOCALES.get(language, "en")
    if language not in REGIONAL_FORMATS or not accept_language:
        return own
    for tag in _preferred(accept_language):
        parts = tag.strip().replace("_", "-").lower().split("-")
        if parts[0] != language or normalize_language(parts[0]) != language:
            continue
        region = next((p for p in parts[1:] if _REGION.fullmatch(p)), None)
        if region is None:
            continue
        found = f"{parts[0]}_{region.upper()}"
        if localedata.exists(found):
            return _as_the_region_writes(found, region.upper())
    return own


def regional_format(value: str | None) -> str | None:
    """The regional Babel locale an account may choose for its numbers, money and dates
    (`es_MX`, `es-419`, `es_es` → `es_ES`), or None for anything else: a language outside
    `REGIONAL_FORMATS`, no region, a region Babel does not know. A region whose CLDR Spanish
    writes decimals otherwise than the region does is the Spanish that writes them its way
    (`es_PH` → `es_419`, as `format_locale` reads a browser's `es-PH`)."""
    if not value or len(value) > 16:
        return None
    parts = value.strip().replace("-", "_").split("_")
    if len(parts) != 2 or parts[0].lower() not in REGIONAL_FORMATS:
        return None
    language, region = parts[0].lower(), parts[1].upper()
    if not _REGION.fullmatch(region.lower()):
        return None
    found = f"{language}_{region}"
    if not localedata.exists(found):
        return None
    return _as_the_region_writes(found, region)


REGIONAL_CHOICES: dict[str, tuple[str, ...]] = {
    "es": ("es_ES", "es_419", "es_MX", "es_US", "es_AR", "es_CO", "es_CL", "es_PE"),
}
"""The regional formats the portal offers a reader of each language of `REGIONAL_FORMATS` (the
API takes any `regional_format` allows)."""


def chosen_format(language: str, chosen: str | None) -> str | None:
    """An account's chosen format (`accounts.format_locale`) if it is one of `language`'s
    regions (an `es_MX` chosen while reading Spanish says nothing about English), else None."""
    if chosen is None or chosen.split("_", 1)[0] != language:
        return None
    return chosen


_SPANISH_BY_DECIMAL = {".": "es_419", ",": "es"}
"""A Spanish that writes decimals with each mark (Latin America's, Spain's)."""


@lru_cache(maxsize=256)
def _as_the_region_writes(found: str, region: str) -> str:
    """`found`, unless the region writes decimals otherwise than CLDR's Spanish of it does:
    Babel's `es_PH` has no numbers of its own and writes Spain's `12,50`, where the Philippines
    (`fil_PH`, `en_PH`) write `12.50`. Then the Spanish that writes the region's mark."""
    home = get_global("likely_subtags").get(f"und_{region}")
    if not home:
        return found
    try:
        mark = _decimal_mark(Locale.parse(home))
    except (ValueError, LookupError):
        return found
    if mark is None or mark == _decimal_mark(Locale.parse(found)):
        return found
    return _SPANISH_BY_DECIMAL.get(mark, found)


def _decimal_mark(locale: Locale) -> str | None:
    symbols = locale.number_symbols.get(locale.default_numbering_system) or {}
    mark = symbols.get("decimal")
    return str(mark) if mark else None


def _preferred(accept_language: str) -> list[str]:
    """The tags of an `Accept-Language` header, most preferred first (quality 0: not at all)."""
    weighted: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept_language.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if quality > 0:
            weighted.append((-quality, i, tag))
    return [tag for _, _, tag in sorted(weighted)]
