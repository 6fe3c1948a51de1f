"""The portal's plumbing: who is visiting and in which language, pages rendered in it, CSRF
tokens, the Content-Security-Policy and redirects that only go where they should."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from gettext import NullTranslations
from pathlib import Path
from typing import Annotated, Any, Literal, cast
from urllib.parse import quote, unquote, urlsplit

from babel import Locale
from babel.core import get_global
from babel.dates import format_date, format_timedelta
from babel.lists import format_list
from babel.numbers import format_decimal, format_percent, get_territory_currencies
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.runtime import Context
from markupsafe import Markup, escape
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import BaseRoute, Match

from simcharge.accounts.models import Account, AccountStatus
from simcharge.api.deps import DB
from simcharge.auth.deps import Customer, client_info, find_session, session_cookie
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import AuthSession
from simcharge.auth.service import policy
from simcharge.auth.sessions import (
    ReadsWithSession,
    csrf_token,
    is_background,
    session_for_token,
)
from simcharge.catalog.schemas import PaymentMethodView
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import Forbidden, refuse_nul
from simcharge.kit.clock import utcnow
from simcharge.kit.crypto import constant_time_equals, keyed_hash
from simcharge.kit.devices import device_label
from simcharge.kit.i18n import (
    BABEL_LOCALES,
    LANGUAGES,
    chosen_format,
    format_locale,
    pick_language,
)
from simcharge.kit.moments import UTC_ZONE, day_in, is_zone, moment_text
from simcharge.kit.money import format_money
from simcharge.kit.translations import N_, translate, translations
from simcharge.kit.units import locale_for, percent_text, shown_count, units_text

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "zh-Hans": "简体中文",
    "zh-Hant": "繁體中文",
    "fil": "Filipino",
    "es": "Español",
}
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600

MENU: tuple[tuple[str, str], ...] = (
    ("/account", N_("My lines")),
    ("/account/topup", N_("Top up")),
    ("/account/records", N_("Records")),
    ("/account/security", N_("Security")),
    ("/account/help", N_("Help")),
)
"""The signed-in customer's menu (base.html)."""

LINE_STATES: dict[str, str] = {
    "available": N_("Not yet active"),
    "active": N_("Active"),
    "grace": N_("Validity ended"),
    "frozen": N_("Frozen"),
    "suspended": N_("Suspended"),
    "terminated": N_("Closed for good"),
}
ORDER_STATES: dict[str, str] = {
    "pending": N_("Waiting for payment"),
    "paid": N_("Paid"),
    "fulfilled": N_("Credited"),
    "failed": N_("Payment failed"),
    "cancelled": N_("Cancelled"),
    "expired": N_("Expired"),
    "refunded": N_("Refunded"),
    "partially_refunded": N_("Partly refunded"),
}
UNIT_NAMES: dict[str, str] = {"VOICE_S": N_("Minutes"), "DATA_B": N_("Data"), "SMS": N_("SMS")}

# Hosted payment pages we may send a payer to (besides our own origin: the sandbox).
PROVIDER_HOSTS = frozenset(
    {
        "checkout.stripe.com",
        "www.paypal.com",
        "www.sandbox.paypal.com",
        "openapi.alipay.com",
        "openapi-sandbox.dl.alipaydev.com",
        "excashier.alipay.com",
        "excashier-sandbox.dl.alipaydev.com",
        "wx.tenpay.com",  # WeChat Pay H5 (`h5_url`)
    }
)


class PortalCsrfFailed(Forbidden):
    slug = "csrf-failed"
    title = N_(
        "The form has expired or did not come from this site; reload the page and try again."
    )


def language_cookie(settings: Settings) -> str:
    return "__Host-sc_lang" if settings.secure_cookies else "sc_lang"


CARRIED_AGE = 15 * 60
"""Seconds a carried value lasts (a reset or verification code is valid 10 minutes)."""

CARRIED = ("reset", "verify", "attach")
"""What one form hands the next page: the login to reset or to verify, the number to attach."""


def carried_cookie(settings: Settings, what: str) -> str:
    """The cookie that carries `what` to the next page. Personal data goes from one form to the
    page after it in a short-lived HttpOnly cookie, never in the URL, where browser history,
    proxies and access logs would keep it (ASVS 8.3.1)."""
    assert what in CARRIED
    return f"__Host-sc_{what}" if settings.secure_cookies else f"sc_{what}"


def carry(response: Response, settings: Settings, what: str, value: str) -> Response:
    """Percent-encoded: a cookie holds ASCII only, and a login or number may be typed in any
    script (`用户@example.com`, full-width digits)."""
    response.set_cookie(
        carried_cookie(settings, what), quote(value[:254], safe=""), max_age=CARRIED_AGE,
        secure=settings.secure_cookies, httponly=True, samesite="lax", path="/",
    )  # fmt: skip
    return response


def carried(request: Request, settings: Settings, what: str) -> str:
    return unquote(request.cookies.get(carried_cookie(settings, what), "")[:4096])[:254]


def drop_carried(response: Response, settings: Settings, what: str) -> Response:
    response.delete_cookie(
        carried_cookie(settings, what), path="/", secure=settings.secure_cookies, httponly=True,
        samesite="lax",
    )  # fmt: skip
    return response


def csrf_cookie(settings: Settings) -> str:
    return "__Host-sc_csrf" if settings.secure_cookies else "sc_csrf"


@dataclass
class Visitor:
    """Who is looking at a page: their language, the signed-in customer if any, and the CSRF
    token their forms must carry."""

    language: str
    customer: Customer | None
    csrf: str
    new_csrf_cookie: str | None = None
    cookies: list[tuple[str, str, int]] = field(default_factory=list)
    read: list[list[Any]] | None = None
    """The page's rows read with the session check (`visitor_reading`), for a customer."""
    locale: str | None = None
    """The Babel locale its numbers, money and dates are written and read in, when it is not
    the language's own: the account's choice (`Account.format_locale`), else its browser's
    region (`kit.i18n.format_locale`: Spanish from a browser saying `es-MX`)."""
    zone: str = UTC_ZONE
    """The IANA zone its times and the days of moments are written in: the signed-in
    account's, else the operator's (`SIMCHARGE_OPERATOR_TIMEZONE`)."""

    @property
    def account(self) -> Account:
        assert self.customer is not None
        return self.customer.account


def choose_language(request: Request, settings: Settings, account: Account | None) -> str:
    """The switcher's cookie, else the account's language, else the browser's, else the
    operator's default."""
    return pick_language(
        request.cookies.get(language_cookie(settings)),
        account.language if account is not None and account.language in LANGUAGES else None,
        accept_language=request.headers.get("accept-language"),
        default=settings.default_language,
    )


async def signed_in(
    request: Request, db: DB, settings: Settings, reads: ReadsWithSession | None = None
) -> tuple[Customer, list[list[Any]] | None] | None:
    """The customer whose session cookie this is, with the rows of `reads` read with the
    session (None without `reads`); None for no customer. A read first; a write only when the
    session must be noted as used (once a minute) or has just ended."""
    token = request.cookies.get(session_cookie(settings))
    if not token or token.startswith("sck_"):
        return None
    rules, now = policy(settings), utcnow()
    # The order page's polling of its state: served, but no use of the session (ASVS 3.3.2).
    background = is_background(request.headers)
    # The session and its account in one query without a write (every page asks).
    found = await find_session(db, settings, token, reads, background=background)
    if found is None:
        return None
    if not found.stale:
        row, account = found.session, found.account
    else:

        async def touch(s: AsyncSession) -> tuple[Account, AuthSession] | None:
            auth = await session_for_token(
                s, settings.secret_key, token, policy=rules, now=now, touch=not background
            )
            found = await s.get(Account, auth.account_id) if auth else None
            return (found, auth) if found and auth else None

        pair = await db.run(touch)
        if pair is None:
            return None
        account, row = pair
    if account.status != AccountStatus.active:
        return None
    return Customer(account, row, via_cookie=True), found.read


def anonymous_csrf(settings: Settings, cookie: str) -> str:
    return keyed_hash(settings.secret_key, "portal-csrf", cookie)


async def visitor(request: Request) -> Visitor:
    """Who is visiting, in which language, with which CSRF token (every page asks). The
    database and settings come from the app's state, as `get_db` and `get_app_settings` give
    them, not as dependencies of their own: FastAPI's solving of each costs more than the
    attribute."""
    return await _visiting(request, None)


def visitor_reading(reads: ReadsWithSession) -> Callable[[Request], Awaitable[Visitor]]:
    """`visitor` for a page whose reads come with the session check, in the same statement:
    its rows are the visitor's `read` when a customer is signed in."""

    async def visiting(request: Request) -> Visitor:
        return await _visiting(request, reads)

    return visiting


async def _visiting(request: Request, reads: ReadsWithSession | None) -> Visitor:
    request.state.portal = True
    state = request.app.state
    settings: Settings = state.settings
    customer, read = await signed_in(request, state.db, settings, reads) or (None, None)
    page = await _visitor(request, settings, customer)
    page.read = read
    request.state.visitor = page
    return page


def choose_locale(request: Request, language: str, account: Account | None = None) -> str | None:
    """The locale of the page's numbers when it is not the language's own: one translation
    (`es`), the number format of the reader's region (`es-MX` writes `12.50`, Spain `12,50`):
    the one their account chose for the language (`Account.format_locale`), else the
    browser's `Accept-Language`'s; None for the language's own."""
    chosen = chosen_format(language, account.format_locale if account is not None else None)
    found = chosen or format_locale(language, request.headers.get("accept-language"))
    return None if found == BABEL_LOCALES.get(language, "en") else found


def choose_zone(settings: Settings, account: Account | None) -> str:
    """The account's time zone, else (no account, none chosen, or one the time zone database
    no longer knows) the operator's."""
    if account is not None and is_zone(account.time_zone):
        return account.time_zone
    return settings.operator_timezone


async def _visitor(request: Request, settings: Settings, customer: Customer | None) -> Visitor:
    account = customer.account if customer else None
    language = choose_language(request, settings, account)
    request.state.language = language
    locale = choose_locale(request, language, account)
    zone = choose_zone(settings, account)
    if customer is not None:
        token = csrf_token(settings.secret_key, customer.session.id)
        return Visitor(language, customer, token, locale=locale, zone=zone)
    cookie = request.cookies.get(csrf_cookie(settings))
    new = None
    if not cookie or len(cookie) < 20:
        cookie = new = secrets.token_urlsafe(24)
    return Visitor(
        language, None, anonymous_csrf(settings, cookie), new_csrf_cookie=new, locale=locale,
        zone=zone,
    )  # fmt: skip


Page = Annotated[Visitor, Depends(visitor)]


async def form_of(request: Request, page: Visitor) -> dict[str, str]:
    """The posted form (text fields only), after checking its CSRF token."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not constant_time_equals(page.csrf, fields.get("csrf", "")):
        if page.customer is not None:  # in the customer's security log, as the API's refusal
            settings: Settings = request.app.state.settings
            db: Database = request.app.state.db
            account_id, client = page.account.id, client_info(request, settings)
            await db.run(
                lambda s: record_event(
                    s,
                    EventKind.csrf_refused,
                    account_id=account_id,
                    client=client,
                    success=False,
                    details={"method": request.method, "path": request.url.path},
                )
            )
        raise PortalCsrfFailed()
    refuse_nul(fields)
    return fields


# --- formatting per locale --------------------------------------------------------------------


def _locale(language: str) -> str:
    return BABEL_LOCALES.get(language, "en")


_FIELD = re.compile(r"%\(\w+\)s|%%")


def _gettext(catalog: NullTranslations) -> Callable[..., Markup]:
    """`_()` of the portal's templates (all autoescaped, being HTML): what Jinja's newstyle
    gettext gives there — the translation as markup, its variables escaped, "%%" read as "%" —
    without its three context calls per use (a page has dozens). A message without variables
    is formatted once; with variables, a translation whose only fields are `%(name)s` is
    formatted with the variables escaped first (what `Markup.__mod__` does, without its helper
    object per variable)."""

    @lru_cache(maxsize=4096)
    def translated(message: str) -> Markup:
        return Markup(catalog.gettext(message))  # noqa: S704 - our own catalog's text

    @lru_cache(maxsize=4096)
    def plain(message: str) -> Markup:
        return translated(message) % {}

    @lru_cache(maxsize=4096)
    def named_fields_only(message: str) -> str | None:
        text = str(translated(message))
        return text if "%" not in _FIELD.sub("", text) else None

    def gettext(message: str, **variables: Any) -> Markup:
        if not variables:
            return plain(message)
        text = named_fields_only(message)
        if text is None:
            return translated(message) % variables
        return Markup(text % {name: escape(value) for name, value in variables.items()})  # noqa: S704 - escaped

    return gettext


class _FoldedGettext(Extension):
    """`{{ _("Balance") }}` with no variables becomes the template's own text when the template
    is compiled (each language has its environment): the same characters `_()` would give on
    every render, without a call, a lookup and an escape per use. `_("… %(n)s", n=x)` becomes
    `("… %(n)s")|gettext(n=x)`, the same function as a filter: Jinja calls a filter directly, a
    function through `Context.call`. Any other use of `_` is left to `_()` at render time."""

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        gettext = cast("Callable[[str], Markup]", self.environment.globals["_"])
        tokens = list(stream)
        i = 0
        while i < len(tokens):
            window = tokens[i:i + 6]
            types = [t.type for t in window]
            if (
                types == ["variable_begin", "name", "lparen", "string", "rparen", "variable_end"]
                and window[1].value == "_"
            ):
                yield Token(window[0].lineno, "data", str(gettext(window[3].value)))
                i += 6
            elif (
                types[:4] == ["name", "lparen", "string", "comma"]
                and window[0].value == "_"
                and (i == 0 or tokens[i - 1].type != "dot")
            ):
                line, message = window[0].lineno, window[2]
                yield from (Token(line, "lparen", "("), message, Token(line, "rparen", ")"),
                            Token(line, "pipe", "|"), Token(line, "name", "gettext"),
                            Token(line, "lparen", "("))
                i += 4
            else:
                yield tokens[i]
                i += 1


READER_ZONE = "reader_zone"
"""The name, in a page's context, of the IANA zone its times are written in (`Visitor.zone`):
a value of the render, not of the environment, which would compile every template again for
each zone."""


@lru_cache(maxsize=64)
def environment(language: str, locale: str | None = None) -> Environment:
    """The templates in `language`, numbers, money and dates in `locale` (None: the
    language's own), times in the zone the render names (`READER_ZONE`)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        # The templates ship with the release: no stat of each file on every render.
        auto_reload=False,
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n", "jinja2.ext.do", _FoldedGettext],
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    catalog = translations(language)
    env.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
    env.globals["_"] = _gettext(catalog)
    # A parsed Locale: Babel would parse the identifier again on every call.
    loc = Locale.parse(locale or _locale(language))

    # Babel's formatting costs tens of microseconds a call and a page makes dozens of calls
    # with the same few values (amounts of a catalog, expiry days): each is remembered.
    @lru_cache(maxsize=4096)
    def day_text(day: date) -> str:
        return str(format_date(day, "medium", locale=loc))

    @lru_cache(maxsize=8192)
    def as_money(minor: int, currency: str) -> str:
        return format_money(int(minor), currency, loc)

    @lru_cache(maxsize=1024)
    def as_days(value: int) -> str:
        """"30 days", "30天", "30 días": Babel's own plural rules, never rounded to months."""
        return str(
            format_timedelta(
                timedelta(days=int(value)), granularity="day", threshold=10**9, locale=loc
            )
        )

    @pass_context
    def as_date(context: Context, value: datetime | date | None) -> str:
        """A day; a moment's day where the reader is (a validity ending 20:00 UTC on Dec 6 ends
        on Dec 7 in Manila)."""
        if value is None:
            return "—"
        return day_text(day_in(value, context.get(READER_ZONE, UTC_ZONE)))

    @pass_context
    def as_datetime(context: Context, value: datetime | None) -> str:
        if value is None:
            return "—"
        return moment_text(language, value, locale, context.get(READER_ZONE, UTC_ZONE))

    @lru_cache(maxsize=8192)
    def unit_text(amount: int, unit: str) -> str:
        return units_text(language, amount, unit, locale)

    def units(amount: int, unit: str) -> str:
        return unit_text(int(amount), unit)

    def as_number(value: float | int) -> str:
        return str(format_decimal(value, locale=loc))

    def as_percent(value: float) -> str:
        return str(format_percent(value, locale=loc))

    def listed(items: Any, style: Literal["standard", "or"] = "standard") -> str:
        """"100 min, 1 GB, and 20 SMS", "100 分鐘、1 GB和20 則簡訊"; `style="or"` for choices."""
        return str(format_list([str(item) for item in items], style=style, locale=loc))

    env.filters.update(
        date=as_date,
        datetime=as_datetime,
        money=as_money,
        number=as_number,
        percent=as_percent,
        listed=listed,
        days=as_days,
        device=device_label,
        units=units,
        units_count=lambda amount, unit: shown_count(int(amount), unit),
        # Filters, not functions: Jinja calls a function through `Context.call` (its checks
        # cost more than the call), a filter directly.
        tr=lambda message: translate(language, message),
        bar_class=bar_class,
        grouped=grouped,
        gettext=env.globals["_"],
        likely_first=likely_first,
    )
    gettext = env.globals["_"]
    env.globals.update(
        # The signed-in menu, translated once per language (every page shows it).
        menu=[(href, gettext(label)) for href, label in MENU],  # type: ignore[operator]
        states=LINE_STATES,
        order_states=ORDER_STATES,
        unit_names=UNIT_NAMES,
        lang=language,
        language_names=LANGUAGE_NAMES,
        languages=[(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
    )
    return env


@lru_cache(maxsize=256)
def likely_currencies(language: str, locale: str | None, default: str) -> tuple[str, ...]:
    """The currencies a reader most likely pays in, likeliest first: the one of the region of
    their number format (`Visitor.locale`, else the language's own: Simplified Chinese → CNY,
    Traditional → TWD, `es` → EUR, `es-MX` → MXN, `en` → USD), then the operator's
    `SIMCHARGE_DEFAULT_CURRENCY`. Prices list these first (`likely_first`); the top-up page
    puts the signed-in customer's lines' currencies before them."""
    name = locale or BABEL_LOCALES.get(language, "en")
    parsed = Locale.parse(name)
    if parsed.territory is None:  # `es`, `en`: the region the language most likely means
        likely = cast("dict[str, str]", get_global("likely_subtags")).get(name)
        parsed = Locale.parse(likely) if likely else parsed
    region = get_territory_currencies(parsed.territory) if parsed.territory else []
    return tuple(dict.fromkeys([*region[:1], default]))


def likely_first(prices: Sequence[Any], first: Sequence[str]) -> list[Any]:
    """`prices` (each with its `currency`) with those in `first` first, in that order, the
    others after in their own order: "10,00 US$ · 68,00 CNY" for a reader paying in dollars."""
    rank: dict[str, int] = {}
    for i, currency in enumerate(first):
        rank.setdefault(currency, i)
    return sorted(prices, key=lambda p: rank.get(p.currency, len(rank)))


def grouped(reference: str, size: int = 4) -> Markup:
    """A long reference (an order's 28 characters) in groups of four, as one reads it out to
    customer service: each group its own span, spaced by the style sheet (`.groups`), so that
    what is copied is the reference itself, without spaces."""
    parts = [reference[i : i + size] for i in range(0, len(reference), size)]
    return Markup('<span class="groups">{}</span>').format(
        Markup("").join(Markup("<span>{}</span>").format(part) for part in parts)
    )


def bar_class(remaining: int, initial: int) -> str:
    """A width class in steps of 5 % (the CSP allows no inline style)."""
    if initial <= 0:
        return "w0"
    share = max(0.0, min(1.0, remaining / initial))
    return f"w{round(share * 20) * 5}"


def fee_text(method: PaymentMethodView, language: str, locale: str | None = None) -> str:
    """"3.49 % + US$0.30", "2 %", "" (no fee), in the reader's number format."""
    loc = locale_for(language, locale)
    parts = []
    if Decimal(method.fee.percent):
        parts.append(percent_text(Decimal(method.fee.percent) / 100, loc))
    parts += [format_money(m.minor, m.currency, loc) for m in method.fee.fixed if m.minor]
    return " + ".join(parts)


def content_security_policy(settings: Settings) -> str:
    """Our own scripts, styles and images only; forms post to us (or, through our redirect, to
    a payment provider's hosted page); never framed."""
    hosts = " ".join(f"https://{h}" for h in sorted(PROVIDER_HOSTS))
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'; form-action 'self' {hosts}; frame-ancestors 'none'; "
        "base-uri 'none'"
    )


def page_headers(settings: Settings, language: str) -> dict[str, str]:
    return {
        "content-security-policy": content_security_policy(settings),
        "cache-control": "no-store",
        "content-language": language,
        "vary": "Cookie, Accept-Language",
    }


def finish(response: Response, page: Visitor, settings: Settings) -> Response:
    if page.new_csrf_cookie:
        response.set_cookie(
            csrf_cookie(settings),
            page.new_csrf_cookie,
            httponly=True,
            secure=settings.secure_cookies,
            samesite="lax",
            path="/",
        )
    return response


def render(
    request: Request,
    page: Visitor,
    template: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> Response:
    """The page; `headers` are added to the answer's (an error's `Retry-After`)."""
    settings: Settings = request.app.state.settings
    env = environment(page.language, page.locale)
    html = env.get_template(template).render(
        page=page,
        signed_in=page.customer is not None,
        account=page.customer.account if page.customer else None,
        operator=settings.operator_name,
        has_logo=settings.operator_logo is not None,
        privacy_notice=settings.privacy_notice_url,
        path=request.url.path,
        here=_here(request),
        likely_currencies=likely_currencies(page.language, page.locale, settings.default_currency),
        **{READER_ZONE: page.zone},
        **context,
    )
    response = HTMLResponse(
        html, status_code=status, headers={**page_headers(settings, page.language), **(headers or {})}
    )
    return finish(response, page, settings)


def _here(request: Request) -> str:
    """This page's address, to come back to (the language switcher). A page shown in answer to
    a form has no address of its own to come back to: the nearest page above it."""
    if request.method in ("GET", "HEAD"):
        query = request.url.query
        return request.url.path + (f"?{query}" if query else "")
    return _page_above(request.app.router.routes, request.url.path)


def _page_above(routes: Sequence[BaseRoute], path: str) -> str:
    """The nearest page (a GET route) at or above `path`: `/account/security/password` →
    `/account/security`, `/account/help/{id}/reply` → `/account/help/{id}`."""
    while path not in ("", "/"):
        scope = {"type": "http", "path": path, "root_path": "", "method": "GET"}
        if any(r.matches(scope)[0] is Match.FULL for r in routes):
            return path
        path = path.rsplit("/", 1)[0]
    return "/"


def safe_next(target: str | None, default: str = "/account") -> str:
    """A path on this site, never another origin (`//evil`, `/\\evil`, `https://…`)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\r\n\t"):
        return default
    return target


def provider_url_ok(settings: Settings, url: str) -> bool:
    """Our own origin (the sandbox) or a known payment provider's hosted page, over https."""
    parts, ours = urlsplit(url), urlsplit(settings.base_url)
    if (parts.scheme, parts.netloc) == (ours.scheme, ours.netloc):
        return True
    host = parts.hostname or ""
    return (
        parts.scheme == "https"
        and host in PROVIDER_HOSTS
        and parts.port is None
        and not parts.username
    )


def redirect(url: str, page: Visitor | None = None, settings: Settings | None = None) -> Response:
    response = RedirectResponse(url, status_code=303)
    if page is not None and settings is not None:
        finish(response, page, settings)
    return response


