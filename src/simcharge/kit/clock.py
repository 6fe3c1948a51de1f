"""The one place that reads the time, so tests can move it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")
"""What an IANA time zone name looks like (it is written into SQL text by the reports)."""


class Clock:
    """Wall-clock time in UTC; `freeze`/`advance` exist for tests and simulations."""

    def __init__(self) -> None:
        self._frozen: datetime | None = None

    def now(self) -> datetime:
        return self._frozen if self._frozen is not None else datetime.now(UTC)

    def freeze(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("the clock needs an aware datetime")
        self._frozen = at

    def advance(self, **delta: float) -> None:
        from datetime import timedelta

        self._frozen = self.now() + timedelta(**delta)

    def unfreeze(self) -> None:
        self._frozen = None


clock = Clock()


def utcnow() -> datetime:
    return clock.now()


def operator_zone(name: str) -> ZoneInfo:
    """The operator's time zone from its IANA name (`SIMCHARGE_OPERATOR_TIMEZONE`): a name the
    time zone database does not know is a `ValueError` (at start-up, from the settings)."""
    if not ZONE_NAME.fullmatch(name or ""):
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Asia/Manila)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Asia/Manila") from None
