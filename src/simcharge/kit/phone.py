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
