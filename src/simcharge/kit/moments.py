"""A moment as a reader of a language writes it. The portal, e-mails, SMS and receipts all say
it the same way."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from babel.dates import format_date, format_time

from simcharge.kit.units import locale_for


# Remembered: the same records and notices come back on every page and in every message, and
# Babel's formatting costs tens of microseconds a call.
@lru_cache(maxsize=8192)
def moment_text(language: str, when: datetime, locale: str | None = None) -> str:
    """A date and a time with its zone, in the locale's order ("Dec 5, 2026, 2:30:00 PM UTC",
    "2026年12月5日 UTC 14:30:00"): accounts have no time zone of their own, so times are in UTC
    and say so (a receipt's bare "18:30" read as local time is a day off in Shanghai).
    `locale`: a regional one (`es_MX`), else the language's."""
    loc = locale_for(language, locale)
    day = format_date(when.astimezone(UTC).date(), "medium", locale=loc)
    return str(loc.datetime_formats["medium"]).format(
        format_time(when, "long", tzinfo=UTC, locale=loc), day
    )
