"""Languages simcharge speaks, and choosing one."""

from __future__ import annotations

from collections.abc import Mapping

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
    if not accept_language:
        return default
    weighted: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if quality > 0:
            weighted.append((-quality, i, tag))
    for _, _, tag in sorted(weighted):
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
