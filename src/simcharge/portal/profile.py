"""The customer's profile page (`/account/profile`, "My details"): their display name, e-mail
address and phone number — through `PATCH /api/v1/me` itself (`accounts.endpoints.update_me`:
a new contact is pending until its code is entered on `/verify`; changing one asks the current
password, checked as at sign-in) — and the time zone their times are written in and, for a
language written differently from region to region (Spanish), the format of their numbers,
money and dates — on every page, e-mail and SMS. The same service as `PATCH /api/v1/me`
(`accounts.service.checked_formats`).

The zone is chosen from a short list grouped by continent (the zones our customers live in; any
IANA zone is taken by the API), led by the current one and the operator's. When the account has
none, `portal.js` preselects the browser's zone if the list has it and says so: nothing is
recorded until the customer saves (a page script may not write behind their back, and the CSP
allows no inline script)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from babel import Locale
from babel.dates import get_timezone_location
from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts import service as accounts
from simcharge.accounts.endpoints import check_contact_change_input, update_me
from simcharge.accounts.models import Account
from simcharge.accounts.schemas import ProfileIn
from simcharge.api.deps import DB, AppSettings
from simcharge.api.problems import error_texts, validation_problem
from simcharge.auth import service as auth
from simcharge.auth.deps import Client, Limits
from simcharge.db import Database
from simcharge.errors import FieldError, SimchargeError, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import BABEL_LOCALES, REGIONAL_CHOICES, REGIONAL_FORMATS
from simcharge.kit.moments import UTC_ZONE, is_zone, offset_text, zone
from simcharge.kit.translations import N_
from simcharge.portal.account import require
from simcharge.portal.security import passkey_answer
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


async def _page(
    request: Request,
    page: Visitor,
    db: Database,
    account: Account,
    *,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    saved: bool = False,
    details: dict[str, str] | None = None,
    details_errors: dict[str, str] | None = None,
    details_error: str | None = None,
    good: str | None = None,
) -> Response:
    settings = request.app.state.settings
    locale = BABEL_LOCALES.get(page.language, "en")
    async with db.read() as s:
        passkey_step = await auth.passkey_second_factor_on(s, account)
    two_step = account.totp_enabled_at is not None
    now = utcnow()
    current = account.time_zone if is_zone(account.time_zone) else None
    chosen = values or {"time_zone": current or "", "format_locale": account.format_locale or ""}
    return render(
        request, page, "profile.html", status=status,
        operator_zone=zone_choice(settings.operator_timezone, locale, now),
        current_zone=zone_choice(current, locale, now) if current else None,
        zone_groups=zone_groups(locale, now),
        formats=format_choices(page.language, locale),
        values=chosen, errors=errors or {}, error=error or details_error, saved=saved, now=now,
        details=details or _details_of(account), details_errors=details_errors or {},
        held=_held(account), good=good, two_step=two_step, by_passkey=passkey_step and not two_step,
        passkeys_on=settings.passkey_rp is not None,
    )  # fmt: skip


def _held(account: Account) -> dict[str, list[str]]:
    """Each contact's values the account holds (verified, pending): a form value among them is
    no change (`_changed`), so passkeys.js asks no passkey for it (`data-held`)."""
    return {
        "email": [v for v in (account.email, account.email_pending) if v],
        "phone": [v for v in (account.phone, account.phone_pending) if v],
    }


def _details_of(account: Account) -> dict[str, str]:
    """The details form as the account has it: a contact's verified value, else the one
    pending (a registration's, not verified yet)."""
    return {
        "display_name": account.display_name or "",
        "email": account.email or account.email_pending or "",
        "phone": account.phone or account.phone_pending or "",
    }


DETAILS_SAVED = {
    "details": N_("Your details are saved."),
    "cancelled": N_("The change is cancelled."),
}
"""The profile page's confirmations (`?saved=`)."""


@router.get("/account/profile")
async def profile_page(request: Request, page: Page, db: DB, saved: str = "") -> Response:
    require(page)
    good = DETAILS_SAVED.get(saved)
    return await _page(request, page, db, page.account, saved=saved == "1", good=good)


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
        return await _page(
            request, page, db, page.account, status=exc.status, values=values, errors=errors,
            error=summary,
        )  # fmt: skip
    return redirect("/account/profile?saved=1")


def _changed(given: str, *held: str | None) -> str | None:
    """A contact as the form gives it, when it is a change: not what the account has (its
    verified value or the one pending). Emptied, it is refused: a contact is replaced, never
    removed (the API has no way to remove one)."""
    if given in held:
        return None
    if not given and any(held):
        return ""
    return given or None


@router.post("/account/profile/details")
async def save_details(
    request: Request,
    page: Page,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> Response:
    """The display name, e-mail address and phone number, through `PATCH /api/v1/me` itself
    (`update_me`: the same checks, counts, log and messages). A contact that changes asks the
    current password and, with two-step verification on, its second factor (the app's code, a
    recovery code, or one of the passkeys' answer), as closing the account does; a refusal is
    shown beside its field and changes nothing. A new contact is pending: on to `/verify` for
    its code, which asks no channel when one contact waits (verify.html: the change fixed it,
    SMS to a new number, e-mail to a new address)."""
    require(page)
    customer = page.customer
    assert customer is not None
    form = await form_of(request, page)
    values = {k: form.get(k, "").strip() for k in ("display_name", "email", "phone")}
    account = page.account
    given: dict[str, str] = {}
    if values["display_name"] != (account.display_name or ""):
        given["display_name"] = values["display_name"]
    for name, current, pending in (
        ("email", account.email, account.email_pending),
        ("phone", account.phone, account.phone_pending),
    ):
        changed = _changed(values[name], current, pending)
        if changed is not None:
            given[name] = changed
    try:
        # A contact emptied or not an address (a number): told beside it at once, with what
        # else is missing (the password, the code) — not only once the password is given.
        problems: list[FieldError] = []
        for name, normalize in (("email", auth.normalize_email), ("phone", auth.normalize_phone)):
            if given.get(name) == "":
                problems.append(FieldError(name, N_("This field is required.")))
            elif given.get(name):
                try:
                    normalize(given[name])
                except ValidationFailed as exc:
                    problems.append(FieldError(name, exc.detail_template, exc.params))
        credential: dict[str, Any] | None = None
        if "email" in given or "phone" in given:
            given["current_password"] = form.get("current_password", "")
            # With two-step on, its second factor as closing the account asks it: the app's
            # code, or (two-step sign-in with a passkey) one of the passkeys through
            # passkeys.js (`credential`) or a recovery code typed (without JavaScript too).
            given["code"] = form.get("code", "").strip()
            credential = passkey_answer(form.get("credential", ""))
        if problems:
            async with db.read() as s:
                passkey_step = await auth.passkey_second_factor_on(s, account)
            try:  # nothing is counted: `update_me` is not reached
                check_contact_change_input(
                    account,
                    ProfileIn.model_construct(
                        current_password=given.get("current_password"),
                        code=given.get("code", ""), credential=credential,
                    ),
                    passkey_step=passkey_step,
                )  # fmt: skip
            except ValidationFailed as exc:
                if exc.field:
                    problems.append(FieldError(exc.field, exc.detail_template, exc.params))
            raise ValidationFailed(errors=problems)
        if not given:
            return redirect("/account/profile?saved=details")
        try:
            body = ProfileIn(**given, credential=credential)
        except ValidationError as exc:
            raise validation_problem(RequestValidationError(exc.errors())) from exc
        await update_me(body, customer, db, settings, client, limits)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        # Input refused beside its fields: the summary says only that some is not valid (the
        # macro's), not one field's "This field is required." without saying which.
        plain_input = type(exc) is ValidationFailed and errors
        return await _page(
            request, page, db, account, status=exc.status, details=values, details_errors=errors,
            details_error=None if plain_input else summary,
        )  # fmt: skip
    if "email" in given or "phone" in given:
        return redirect("/verify?sent=1")
    return redirect("/account/profile?saved=details")


@router.post("/account/profile/cancel")
async def cancel_change(request: Request, page: Page, db: DB, client: Client) -> Response:
    """Cancel the contact pending on a channel (`auth.cancel_pending_contact`): a change of a
    verified one, which stays, or one added where none was verified, which goes — its code void
    either way. No password: it moves nothing to a new address. Not the account's only contact
    (offered only where another is left; refused otherwise)."""
    account_id = require(page)
    form = await form_of(request, page)
    channel: Literal["email", "sms"] = (
        "sms" if form.get("channel") in ("sms", "phone") else "email"
    )

    async def run(s: AsyncSession) -> None:
        account = await s.get(Account, account_id, with_for_update=True)
        assert account is not None
        await auth.cancel_pending_contact(s, account, channel, client=client, now=utcnow())

    try:
        await db.run(run)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return await _page(
            request, page, db, page.account, status=exc.status, details_errors=errors,
            details_error=summary,
        )  # fmt: skip
    return redirect("/account/profile?saved=cancelled")
