"""The customer's profile page (`/account/profile`): the time zone their times are written in
and, for a language written differently from region to region (Spanish), the format of their
numbers, money and dates — on every page, e-mail and SMS. The same service as
`PATCH /api/v1/me` (`accounts.service.checked_formats`).

The zone is chosen from a short list grouped by continent (the zones our customers live in; any
IANA zone is taken by the API), led by the current one and the operator's. When the account has
none, `portal.js` preselects the browser's zone if the list has it and says so: nothing is
recorded until the customer saves (a page script may not write behind their back, and the CSP
allows no inline script)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from babel import Locale
from babel.dates import get_timezone_location
from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts import service as accounts
from simcharge.accounts.models import Account
from simcharge.api.deps import DB
from simcharge.api.problems import error_texts
from simcharge.errors import SimchargeError
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import BABEL_LOCALES, REGIONAL_CHOICES, REGIONAL_FORMATS
from simcharge.kit.moments import UTC_ZONE, is_zone, offset_text, zone
from simcharge.kit.translations import N_
from simcharge.portal.account import require
from simcharge.portal.web import Page, Visitor, form_of, redirect, render

router = APIRouter(include_in_schema=False)

ZONE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (N_("Asia"), (
        "Asia/Manila", "Asia/Shanghai", "Asia/Hong_Kong", "Asia/Taipei", "Asia/Macau",
        "Asia/Singapore", "Asia/Kuala_Lumpur", "Asia/Jakarta", "Asia/Bangkok",
        "Asia/Ho_Chi_Minh", "Asia/Tokyo", "Asia/Seoul", "Asia/Kolkata", "Asia/Dubai",
        "Asia/Riyadh",
    )),
    (N_("Americas"), (
        "America/Mexico_City", "America/Tijuana", "America/Cancun", "America/Bogota",
        "America/Lima", "America/Santiago", "America/Argentina/Buenos_Aires", "America/Caracas",
        "America/Guatemala", "America/Panama", "America/Sao_Paulo", "America/New_York",
        "America/Chicago", "America/Denver", "America/Phoenix", "America/Los_Angeles",
        "America/Anchorage", "Pacific/Honolulu", "America/Toronto", "America/Vancouver",
        "America/Puerto_Rico",
    )),
    (N_("Europe and Africa"), (
        "Europe/London", "Europe/Madrid", "Atlantic/Canary", "Europe/Paris", "Europe/Berlin",
        "Europe/Rome", "Europe/Athens", "Europe/Moscow", "Africa/Lagos", "Africa/Cairo",
        "Africa/Nairobi", "Africa/Johannesburg", "Africa/Malabo",
    )),
    (N_("Oceania"), (
        "Australia/Perth", "Australia/Brisbane", "Australia/Sydney", "Pacific/Auckland",
        "Pacific/Guam", "Pacific/Fiji",
    )),
    (N_("Other"), (UTC_ZONE,)),
)
"""The zones the page offers, by where they are (each group east to west by its offset)."""


@dataclass(frozen=True, slots=True)
class Choice:
    value: str
    label: str


@lru_cache(maxsize=4096)
def _zone_label(name: str, locale: str, now: datetime) -> str:
    """"Manila (UTC+08:00)", "马尼拉 (UTC+08:00)": the city in the reader's language and the
    offset of today (New York's is −05:00 in winter and −04:00 in summer), written as every
    time the customer reads is (`offset_text`)."""
    if name == UTC_ZONE:
        return UTC_ZONE
    city = get_timezone_location(name, locale, return_city=True)
    return f"{city} ({offset_text(now.astimezone(zone(name)))})"


def _minutes(name: str, now: datetime) -> int:
    """The zone's offset from UTC now, in minutes."""
    delta = now.astimezone(zone(name)).utcoffset()
    return int(delta.total_seconds() // 60) if delta is not None else 0


def zone_choice(name: str, locale: str, now: datetime) -> Choice:
    return Choice(name, _zone_label(name, locale, now))


def zone_groups(locale: str, now: datetime) -> list[tuple[str, list[Choice]]]:
    """`ZONE_GROUPS` labelled in `locale`, each group ordered east to west, then by name."""
    groups = []
    for title, names in ZONE_GROUPS:
        choices = [zone_choice(n, locale, now) for n in names if is_zone(n)]
        groups.append((title, sorted(choices, key=lambda c: (-_minutes(c.value, now), c.label))))
    return groups


@lru_cache(maxsize=64)
def format_choices(language: str, locale: str) -> tuple[Choice, ...]:
    """The regional formats offered to a reader of `language`, named in their language with a
    sample ("español (México) — 1,234.56"); none for a language written alike everywhere."""
    if language not in REGIONAL_FORMATS:
        return ()
    return tuple(
        Choice(code, f"{Locale.parse(code).get_display_name(locale)} — "
                     f"{format_decimal(1234.56, locale=code)}")
        for code in REGIONAL_CHOICES.get(language, ())
    )  # fmt: skip


def _page(
    request: Request,
    page: Visitor,
    account: Account,
    *,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    saved: bool = False,
) -> Response:
    settings = request.app.state.settings
    locale = BABEL_LOCALES.get(page.language, "en")
    now = utcnow()
    current = account.time_zone if is_zone(account.time_zone) else None
    chosen = values or {"time_zone": current or "", "format_locale": account.format_locale or ""}
    return render(
        request, page, "profile.html", status=status,
        operator_zone=zone_choice(settings.operator_timezone, locale, now),
        current_zone=zone_choice(current, locale, now) if current else None,
        zone_groups=zone_groups(locale, now),
        formats=format_choices(page.language, locale),
        values=chosen, errors=errors or {}, error=error, saved=saved, now=now,
    )  # fmt: skip


@router.get("/account/profile")
async def profile_page(request: Request, page: Page, saved: str = "") -> Response:
    require(page)
    return _page(request, page, page.account, saved=saved == "1")


@router.post("/account/profile")
async def save_profile(request: Request, page: Page, db: DB) -> Response:
    """Save the zone and format; an empty choice is the default (the operator's zone, the
    browser's format). A field the form did not show (the format, for a language written
    alike everywhere) is left as it is."""
    account_id = require(page)
    form = await form_of(request, page)
    given = {f: form[f].strip() or None for f in accounts.FORMAT_FIELDS if f in form}
    try:

        async def run(s: AsyncSession) -> Account:
            account = await s.get(Account, account_id, with_for_update=True)
            assert account is not None
            return await accounts.set_formats(s, account, given, utcnow())

        await db.run(run)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        values = {f: form.get(f, "") for f in accounts.FORMAT_FIELDS}
        return _page(
            request, page, page.account, status=exc.status, values=values, errors=errors,
            error=summary,
        )  # fmt: skip
    return redirect("/account/profile?saved=1")
