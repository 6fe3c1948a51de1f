"""Rendering back-office pages: Jinja2 templates whose texts are gettext messages, a strict
Content-Security-Policy (no inline script or style), no caching of what staff see."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.numbers import format_decimal
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from simcharge.api.problems import error_texts
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.refusal import NO_REFUSAL
from simcharge.backoffice.staff import csrf_token
from simcharge.backoffice.words import country_name, done_message, state_word
from simcharge.catalog.schemas import PER_UNITS
from simcharge.config import Settings
from simcharge.errors import SimchargeError
from simcharge.kit.devices import device_label
from simcharge.kit.i18n import BABEL_LOCALES, pick_language, pick_text
from simcharge.kit.moments import UTC_ZONE, is_zone, moment_text
from simcharge.kit.money import format_money, is_currency
from simcharge.kit.translations import N_, translate, translations

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
STAFF_LANGUAGES = ("en", "zh-Hans", "zh-Hant", "fil", "es")
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""Scripts only from `backoffice/static` (the passkey ceremonies' `passkeys.js`, which talks to
this site alone); never inline."""
HEADERS = {"content-security-policy": CSP, "cache-control": "no-store"}


def units_for_staff(language: str, amount: Any, unit: str) -> str:
    """Exact enough to adjust by, in the staff member's language: "-2 min 30 s", "1,5 MB",
    "1.50 GB", "100 分钟" (the customer's pages round to whole minutes and MB)."""
    value = int(amount)
    sign, value = ("-" if value < 0 else ""), abs(value)
    loc = BABEL_LOCALES.get(language, "en")
    if unit == "VOICE_S":
        minutes = format_decimal(value // 60, locale=loc)
        if value % 60:
            text = translate(language, N_("{minutes} min {seconds} s")).format(
                minutes=minutes, seconds=value % 60
            )
        else:
            text = translate(language, N_("{n} min")).format(n=minutes)
    elif unit == "DATA_B":
        mb = value / 1048576
        big = mb >= 1024
        shown, pattern = (mb / 1024, "#,##0.00") if big else (mb, "#,##0.0")
        number = format_decimal(shown, pattern, locale=loc)
        text = translate(language, N_("{n} GB") if big else N_("{n} MB")).format(n=number)
    elif unit == "SMS":
        text = translate(language, N_("{n} SMS")).format(n=format_decimal(value, locale=loc))
    else:
        text = format_decimal(value, locale=loc)
    return sign + text


@lru_cache(maxsize=64)  # five languages, a few zones: staff pick their own
def environment(language: str, zone: str = UTC_ZONE) -> Environment:
    """The back office's templates in `language`, its times in `zone` (`zone_of`: the staff
    member's own, else the operator's) and saying it."""
    locale = BABEL_LOCALES.get(language, "en")
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        # The templates ship with the release: no stat of each file on every render.
        auto_reload=False,
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]

    def money(minor: Any, currency: str) -> str:
        return format_money(int(minor), currency, locale)

    def when(value: datetime | None) -> str:
        if value is None:
            return "—"
        return moment_text(language, value, None, zone)  # with its zone: staff are anywhere

    def signed_units(amount: Any, unit: str) -> str:
        if is_currency(unit):
            return format_money(int(amount), unit, locale)
        return units_for_staff(language, amount, unit)

    def per(per_units: Any, service: str) -> str:
        """A tariff's `per_units` as the catalog file names it (`minute`, `MB`…)."""
        names = {n: name for name, n in PER_UNITS.get(service, {}).items()}
        return names.get(int(per_units), str(per_units))

    def increment(value: Any, service: str) -> str:
        return f"{int(value)} {'s' if service == 'voice' else 'B'}" if service != "sms" else "1"

    env.filters.update(
        per=per,
        increment=increment,
        money=money,
        when=when,
        units=signed_units,
        text=lambda v: pick_text(v, language) if isinstance(v, dict) else str(v),
        device=device_label,
        country=lambda code: country_name(language, code),
    )
    # A code as words in the member's language (`words.WORDS`): `state_word("ticket", t.status)`.
    env.globals["state_word"] = lambda kind, code: state_word(language, kind, code)
    return env


def language_of(request: Request, actor: Actor | None) -> str:
    """`?lang=`, else the staff member's own language, else the browser's, else the operator's
    default."""
    settings: Settings = request.app.state.settings
    return pick_language(
        request.query_params.get("lang"),
        actor.staff.language if actor is not None and actor.staff is not None else None,
        accept_language=request.headers.get("accept-language"),
        default=settings.default_language,
    )


def zone_of(settings: Settings, actor: Actor | None) -> str:
    """The zone a back-office page writes its times in: the staff member's own
    (`staff_users.time_zone`), else the operator's (`SIMCHARGE_OPERATOR_TIMEZONE`). Reports
    still count the operator's days (`reports.zone_of`): they are the business's books."""
    own = actor.staff.time_zone if actor is not None and actor.staff is not None else None
    return own if is_zone(own) else settings.operator_timezone


def render(
    request: Request,
    name: str,
    actor: Actor | None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    language = language_of(request, actor)
    csrf = (
        csrf_token(settings.secret_key, actor.session_id)
        if actor is not None and actor.session_id is not None
        else context.pop("csrf", "")
    )
    context.setdefault("form_error", NO_REFUSAL)  # a refused form shown again (`forms.in_place`)
    html = (
        environment(language, zone_of(settings, actor))
        .get_template(name)
        .render(
            lang=language,
            actor=actor,
            csrf=csrf,
            operator=settings.operator_name,
            path=request.url.path,
            notice=request.query_params.get("done"),
            # What the form's answer says happened (`words.DONE`): never the query string itself.
            done=done_message(language, request.query_params.get("done")),
            **context,
        )
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def back(to: str, done: str | None = None) -> RedirectResponse:
    """After a form: see the result (Post/Redirect/Get). `to` may end with `#anchor` (what was
    acted on, `links.then_or`): `done` goes before it, so the page opens there and says so."""
    to, hash_, anchor = to.partition("#")
    if done:
        to += ("&" if "?" in to else "?") + "done=" + done
    return RedirectResponse(to + hash_ + anchor, status_code=303, headers=HEADERS)


def field_texts(
    request: Request, actor: Actor | None, exc: SimchargeError
) -> tuple[str, dict[str, str]]:
    """A refusal for a form, in the page's language: a sentence above it, and one beside each
    offending field."""
    return error_texts(exc, language_of(request, actor))
