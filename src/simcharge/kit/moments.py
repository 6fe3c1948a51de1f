"""A moment as a reader of a language writes it, in the reader's time zone. The portal, e-mails,
SMS and receipts all say it the same way."""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from typing import TypeGuard
from zoneinfo import ZoneInfo, available_timezones

from babel.dates import format_date, format_time

from simcharge.kit.units import locale_for

UTC_ZONE = "UTC"


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def is_zone(name: str | None) -> TypeGuard[str]:
    """Whether `name` is an IANA time zone the time zone database knows (`Asia/Manila`; not
    `posix/…`, a file path or an abbreviation like `PST`, which names no rules)."""
    return name is not None and name in _known_zones()


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The zone of an IANA name (checked: `is_zone`); an unknown one is UTC, never an error —
    a name stored before the database dropped it must not stop a message going out."""
    return ZoneInfo(name) if is_zone(name) else ZoneInfo(UTC_ZONE)


def offset_text(local: datetime) -> str:
    """The zone of an aware moment as its offset from UTC: "UTC+08:00", "UTC−06:00" (a minus
    sign; an SMS writes it "-"), "UTC+05:30"; "UTC" itself at 0. Written the same in every
    language — the portal's list of zones labels each zone with it ("Manila (UTC+08:00)")."""
    delta = local.utcoffset()
    minutes = int(delta.total_seconds() // 60) if delta is not None else 0
    if minutes == 0:
        return UTC_ZONE
    sign = "+" if minutes > 0 else "\u2212"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


# Remembered: the same records and notices come back on every page and in every message, and
# Babel's formatting costs tens of microseconds a call. The zone is passed by name: a hashable,
# small key (the reader's account's, else the operator's).
@lru_cache(maxsize=8192)
def moment_text(
    language: str,
    when: datetime,
    locale: str | None = None,
    zone_name: str = UTC_ZONE,
    *,
    to_the_minute: bool = False,
) -> str:
    """A date and a time in the zone `zone_name`, then the zone as its offset from UTC, in the
    locale's order of date and time ("Dec 6, 2026, 3:00:00 PM UTC−05:00", "2026年12月7日
    04:00:00 UTC+08:00") — never a bare "18:30" a reader would take for their own time. The
    offset, not a name: Babel names a zone in some locales and not others, and spells some in
    full ("hora estándar de Europa central" in `es_MX`); an abbreviation is ambiguous (CST:
    Mexico City or Shanghai) and unknown to most readers outside its country; the offset reads
    the same in every language, and shows the change of summer time ("UTC+01:00" in winter,
    "UTC+02:00" in summer in Madrid). The date is the moment's date in that zone (20:00 UTC on
    Dec 6 is Dec 7 in Manila). `locale`: a regional one (`es_MX`), else the language's.
    `to_the_minute`: the time in the locale's short form, without seconds ("Dec 7, 2026,
    4:00 AM UTC+08:00", "2026年12月7日 04:00 UTC+08:00", "2026年12月7日 上午4:00 UTC+08:00" in
    Traditional Chinese) — a message's deadline or sign-in; the same date and offset."""
    loc = locale_for(language, locale)
    local = when.astimezone(zone(zone_name))
    day = format_date(local.date(), "medium", locale=loc)
    clock = format_time(
        local, "short" if to_the_minute else "medium", tzinfo=local.tzinfo, locale=loc
    )
    return str(loc.datetime_formats["medium"]).format(f"{clock} {offset_text(local)}", day)


def day_in(when: datetime | date, zone_name: str = UTC_ZONE) -> date:
    """The date a reader in `zone_name` sees: a datetime's date there, a date as it is."""
    if isinstance(when, datetime):
        return when.astimezone(zone(zone_name)).date()
    return when
