"""A refused back-office form shown again in place: the same screen, with the refusal on top,
the offending fields marked beside what was typed, and the page's one-time key still in the
form (the transaction rolled back, so the corrected submit is the first one the key sees).

A route runs its action through `in_place`; when the action raises a refusal about the form
(bad input, a business rule, a conflict), the screen the form was on is drawn again by the page
function given (`redraw`), or, for a form shown on several screens (an order's forms on the
customer, ticket and attention pages), by the screen registered for the path it came from
(`origin`). Refusals that are not about the form — nothing there (404), not signed in, too many
requests — and anything else keep the error page."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from simcharge.backoffice.audit import Actor
from simcharge.backoffice.refusal import FormError
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.web import field_texts
from simcharge.errors import NotAuthenticated, NotFound, RateLimited, SimchargeError


def about_the_form(exc: SimchargeError, names: Iterable[str]) -> bool:
    """A refusal the form's page answers in place: not "nothing is there" (unless it names one of
    the form's fields: an assignee who does not exist), not "sign in", not "wait"; never a
    failure of ours."""
    if isinstance(exc, NotAuthenticated | RateLimited) or exc.status >= 500:
        return False
    if isinstance(exc, NotFound):
        named = {exc.field, *(e.field for e in exc.errors)}
        return bool(named & set(names))
    return True


def refused_status(exc: SimchargeError) -> int:
    """The refusal's own status — 422 for input to correct, 409 for a conflict with the state of
    things, 403 for a business rule that forbids it (four eyes, a scope only the command line
    gives), 400 for a form that came without its one-time key; 422 for a field naming something
    that is not there (an assignee)."""
    return exc.status if exc.status in (400, 403, 409, 422) else 422


def form_error(
    request: Request,
    actor: Actor,
    exc: SimchargeError,
    *,
    form: str,
    values: Mapping[str, Any],
    secrets: Iterable[str] = (),
    aliases: Mapping[str, str] | None = None,
) -> FormError:
    """`exc` as the form `form` shows it, in the page's language: its fields (the API's names,
    or their `aliases`, that the form has) marked; a refusal about something the form does not
    show (the page's one-time key, the order) said in the summary."""
    summary, texts = field_texts(request, actor, exc)
    aliases = aliases or {}
    fields: dict[str, str] = {}
    elsewhere: list[str] = []
    for name, text in texts.items():
        mine = aliases.get(name, name)
        if mine in values:
            fields[mine] = text
        elif text != summary:
            elsewhere.append(text)
    if elsewhere:
        summary = " ".join([summary, *elsewhere])
    hidden = set(secrets)
    # A form that came without its one-time key gets the page's fresh one.
    kept = {k: v for k, v in values.items() if k not in hidden and not (k == "idem" and not v)}
    return FormError(form, summary, fields, kept, refused_status(exc))


Redraw = Callable[[FormError], Awaitable[HTMLResponse]]


async def in_place(
    request: Request,
    actor: Actor,
    act: Callable[[], Awaitable[Response]],
    *,
    form: str,
    values: Mapping[str, Any],
    redraw: Redraw | None,
    secrets: Iterable[str] = (),
    aliases: Mapping[str, str] | None = None,
) -> Response:
    """`act()`'s answer; or, when it is refused about the form, the form's page drawn again by
    `redraw` with the refusal (no `redraw`: the error page, as before)."""
    try:
        return await act()
    except SimchargeError as exc:
        if redraw is None or not about_the_form(exc, values):
            raise
        refused = form_error(
            request, actor, exc, form=form, values=values, secrets=secrets, aliases=aliases
        )
        return await redraw(refused)


# --- screens a form may come from --------------------------------------------------------------

UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

OriginPage = Callable[[Request, Actor, dict[str, str], FormError], Awaitable[HTMLResponse]]
_ORIGINS: list[tuple[re.Pattern[str], Permission, OriginPage]] = []


def origin(pattern: str, permission: Permission) -> Callable[[OriginPage], OriginPage]:
    """Register a screen (its path as a regular expression with named groups, and the permission
    it needs) that forms shown on several screens come back to when refused."""

    def register(page: OriginPage) -> OriginPage:
        _ORIGINS.append((re.compile(pattern), permission, page))
        return page

    return register


def may_see(actor: Actor, then: str) -> bool:
    """`then` is a registered screen forms come back to, and the member's role may see it: what
    a form's action follows after success (`links.then_or`) as after a refusal (`redraw_at`)."""
    return any(
        pattern.fullmatch(then) is not None and actor.can(permission)
        for pattern, permission, _ in _ORIGINS
    )


def redraw_at(request: Request, actor: Actor, then: str) -> Redraw | None:
    """The registered screen at the path `then` (a form's `then`: where it was sent from), if the
    staff member may see it; else None (the error page)."""
    for pattern, permission, page in _ORIGINS:
        found = pattern.fullmatch(then)
        if found is not None and actor.can(permission):
            return partial(page, request, actor, found.groupdict())
    return None
