"""Phone numbers in E.164, validated with `phonenumbers`."""

from __future__ import annotations

import phonenumbers


class InvalidPhoneNumber(ValueError):
    pass


def normalize_e164(raw: str, *, region: str | None = None) -> str:
    """`"+1 (415) 555-0100"` → `"+14155550100"`; raises `InvalidPhoneNumber` if not a real number."""
    text = raw.strip()
    if not text:
        raise InvalidPhoneNumber("empty phone number")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"{raw!r} is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber(f"{raw!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def country_of(e164: str) -> str | None:
    """ISO 3166-1 alpha-2 region of an E.164 number, if known."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164))


def national_e164(raw: str, region: str | None) -> str | None:
    """A number typed as it is dialled from inside `region`, in E.164: `"0917 123 4567"` in
    `PH` is `"+639171234567"` (and `"011 44 7911 123456"` in `US`, its prefix for abroad, is
    `"+447911123456"`). None without a region, for a number written with `+` or `00` (E.164
    already: read without a region), and for one that is no valid number dialled there — a
    fragment, another country's national form: ambiguous, for the caller to read as text."""
    text = raw.strip()
    if not region or not text or text.startswith("+") or text.startswith("00"):
        return None
    try:
        number = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
