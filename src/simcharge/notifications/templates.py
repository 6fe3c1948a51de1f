"""Rendering a message in a language: Jinja2 templates whose texts are gettext messages.

A template `notifications/templates/<name>.jinja` defines blocks `subject`, `text`, `sms` and
`html_body` (any may be empty). Params are formatted for the reader's locale with the filters
`date`, `datetime` (a moment to the minute), `money` and `units`; times and the dates of
moments in the reader's time zone (their account's, else the operator's: `render`'s `zone`),
numbers and money in their regional format (`locale`, e.g. `es_MX`) when their language has
them. An e-mail's two parts say the same: the HTML body in `_layout.html`, the text in
`_layout.text.jinja` (the operator's name above, why the reader gets it below: a customer's
account, or — a `staff.…` template, sent by `tell_staff` — a back-office account). An SMS is
kept in GSM-7 where its language allows (`notifications.sms`): money whose symbol is not GSM-7
by its ISO code, typography by its GSM-7 equivalents, and its letters without the accents GSM-7
lacks when that saves a segment."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.dates import format_date
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from markupsafe import Markup

from simcharge.kit.i18n import (
    BABEL_LOCALES,
    DEFAULT_LANGUAGE,
    LANGUAGES,
    chosen_format,
    pick_text,
    spoken,
)
from simcharge.kit.moments import UTC_ZONE, day_in, moment_text
from simcharge.kit.money import format_money
from simcharge.kit.translations import translations
from simcharge.kit.units import shown_count, units_text
from simcharge.notifications.sms import gsm_safe, sms_money

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

READER_ZONE = "reader_zone"
"""The name, in a template's context, of the IANA zone its reader's times are written in: the
zone is a value of the render, not of the environment (one environment per zone would compile
every template again for each)."""


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str
    sms: str


def _parse_when(value: Any) -> datetime | date:
    if isinstance(value, datetime | date):
        return value
    text = str(value)
    return datetime.fromisoformat(text) if "T" in text else date.fromisoformat(text)


@lru_cache(maxsize=32)
def environment(
    language: str, *, html: bool = False, sms: bool = False, locale: str | None = None
) -> Environment:
    """Text (subject, body) renders as is; HTML renders with every value escaped; an SMS
    writes money whose symbol is not GSM-7 with its ISO code ("PHP 21.19": `sms_money`).
    `locale`: the reader's regional format (`es_MX`), else the language's own."""
    regional = locale
    locale = locale or BABEL_LOCALES.get(language, "en")
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        # The templates ship with the release: no stat of each file on every render.
        auto_reload=False,
        autoescape=html,  # noqa: S701 - text and SMS are plain text; HTML is escaped (html=True)
        extensions=["jinja2.ext.i18n"],
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]

    @pass_context
    def as_date(context: Context, value: Any) -> str:
        """A day; a moment's day where the reader is (a validity ending 20:00 UTC on Dec 6
        ends on Dec 7 in Manila)."""
        day = day_in(_parse_when(value), context.get(READER_ZONE, UTC_ZONE))
        return str(format_date(day, "long", locale=locale))

    @pass_context
    def as_datetime(context: Context, value: Any) -> str:
        """A moment to the minute (a deadline, a sign-in: seconds say nothing to its reader),
        with its date and its offset from UTC (`moment_text`); a day as `date` writes it."""
        when = _parse_when(value)
        if not isinstance(when, datetime):
            return str(format_date(when, "long", locale=locale))
        return moment_text(
            language, when, regional, context.get(READER_ZONE, UTC_ZONE), to_the_minute=True
        )

    def as_money(minor: Any, currency: str) -> str:
        formatted = format_money(int(minor), currency, locale)
        return sms_money(formatted, currency, locale) if sms else formatted

    def as_units(amount: Any, unit: str) -> str:
        return units_text(language, int(amount), unit, regional)

    def units_count(amount: Any, unit: str) -> int:
        """The number `units` shows, to choose a plural form by (`{% pluralize %}`)."""
        return shown_count(int(amount), unit)

    def as_text(value: Any) -> str:
        """A text given in several languages (`{"en": …, "es": …}`) in this one."""
        return pick_text(value, language) if isinstance(value, dict) else str(value)

    env.filters.update(
        sentences=sentences,
        date=as_date,
        datetime=as_datetime,
        money=as_money,
        units=as_units,
        units_count=units_count,
        text=as_text,
    )
    return env


_CLOSING_MARKS = frozenset("。！？；：")
"""The full-width marks that end a Chinese sentence: the next one follows without a space."""


def sentences(parts: list[Any]) -> str:
    """Sentences (each from its own message) joined as their language writes them: after a
    full-width mark ("。"), nothing; else one space. An autoescaped part stays markup."""
    texts = [p for p in (p.strip() for p in parts) if p]
    joined = ""
    for text in texts:
        if joined and joined[-1] not in _CLOSING_MARKS:
            joined += " "
        joined += text
    return Markup(joined) if any(isinstance(p, Markup) for p in parts) else joined  # noqa: S704


def _block(env: Environment, name: str, block: str, params: dict[str, Any]) -> str:
    template = env.get_template(f"{name}.jinja")
    render = template.blocks.get(block)
    if render is None:
        return ""
    return "".join(render(template.new_context(params))).strip()


def render(
    name: str,
    language: str,
    params: dict[str, Any],
    *,
    default: str = DEFAULT_LANGUAGE,
    zone: str = UTC_ZONE,
    locale: str | None = None,
) -> Rendered:
    """The message in `language`, or in `default` (pass `SIMCHARGE_DEFAULT_LANGUAGE`) if we do
    not speak it; its times in `zone` (an IANA name: the reader's account's, else the
    operator's — `notifications.service.reading_of`), its numbers in the regional format
    `locale` when it is one of the language's (`kit.i18n.chosen_format`)."""
    language = spoken(language, default)
    locale = chosen_format(language, locale)
    params = {**params, READER_ZONE: zone}
    env = environment(language, locale=locale)
    html_env = environment(language, html=True, locale=locale)
    operator = params.get("operator", "simcharge")
    # A staff member has a back-office account, not a customer's: the footer says so.
    staff = name.startswith("staff.")
    # The operator's privacy notice (`SIMCHARGE_PRIVACY_NOTICE_URL`, made absolute): a
    # customer's, so not under a staff member's message.
    privacy = None if staff else params.get("privacy_notice")
    body = _block(html_env, name, "html_body", params)
    html = (
        html_env.get_template("_layout.html").render(
            # `body` is the output of an autoescaping render: every value in it is escaped already.
            lang=language,
            body=Markup(body),  # noqa: S704
            operator=operator,
            staff=staff,
            privacy=privacy,
        )
        if body
        else ""
    )
    text = _block(env, name, "text", params)
    if text:
        text = (
            env.get_template("_layout.text.jinja")
            .render(body=text, operator=operator, staff=staff, privacy=privacy)
            .strip()
        )
    return Rendered(
        subject=_block(env, name, "subject", params),
        text=text,
        html=html,
        sms=gsm_safe(_block(environment(language, sms=True, locale=locale), name, "sms", params)),
    )


def template_names() -> list[str]:
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja") if not p.stem.startswith("_"))


def render_subject(name: str, language: str, params: dict[str, Any]) -> str:
    """Only the subject (a notice's title in a list): no body, no HTML layout. No subject says
    a time or a date (a title is shown wherever its reader is): no zone."""
    language = language if language in LANGUAGES else DEFAULT_LANGUAGE
    return _block(environment(language), name, "subject", params)


_TITLES: dict[tuple[uuid.UUID, str, str, str], str] = {}
_TITLES_KEPT = 20_000


def notice_title(
    notice_id: uuid.UUID,
    name: str,
    language: str,
    params: dict[str, Any],
    *,
    operator: str,
    base_url: str,
) -> str:
    """The title of a stored notice (`render_subject` of its template and parameters, with the
    operator's name and address), remembered by the process: a notice never changes once
    stored, and the user center shows the same few on every view."""
    key = (notice_id, language, operator, base_url)
    title = _TITLES.get(key)
    if title is None:
        if len(_TITLES) >= _TITLES_KEPT:
            _TITLES.clear()
        title = render_subject(name, language, {"operator": operator, "base_url": base_url,
                                                **params})
        _TITLES[key] = title
    return title
