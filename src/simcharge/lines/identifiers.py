"""Checks for the identifiers of a SIM: ICCID (ITU-T E.118), IMSI and eSIM activation code."""

from __future__ import annotations

import re

_ICCID = re.compile(r"^89\d{16,20}$")
_IMSI = re.compile(r"^\d{14,15}$")
_LPA = re.compile(r"^LPA:1\$[A-Za-z0-9.\-]+\$[A-Za-z0-9\-]*(\$.*)?$")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def luhn_check_digit(digits: str) -> str:
    return str(
        (
            10
            - sum(
                (int(c) * 2 - 9 if int(c) > 4 else int(c) * 2) if i % 2 == 0 else int(c)
                for i, c in enumerate(reversed(digits))
            )
            % 10
        )
        % 10
    )


def valid_iccid(value: str) -> bool:
    """18–22 digits, issuer prefix 89 (telecom), ending with a Luhn check digit."""
    return bool(_ICCID.match(value)) and luhn_ok(value)


def valid_imsi(value: str) -> bool:
    return bool(_IMSI.match(value))


ACTIVATION_CODE_MAX = 255
"""The longest activation code (SGP.22 bounds it so; `lines.activation_code` holds this many)."""


def valid_activation_code(value: str) -> bool:
    """GSMA SGP.22 activation code: `LPA:1$<SM-DP+ address>$<matching id>[$…]`, at most
    `ACTIVATION_CODE_MAX` characters."""
    return len(value) <= ACTIVATION_CODE_MAX and bool(_LPA.match(value))
