"""Round 16's phone and languages review of the security page and "Your details" (SQLite and
PostgreSQL):

- A wrong code while setting up two-step verification shows the same set-up again (its QR
  code and key: the app that scanned it keeps working), the error beside the code field in
  words that do not speak of recovery codes (the set-up has none yet); the attempt is counted
  and logged as before. No set-up to go on with: the security page says why.
- The sessions' section and its scrolling table are two landmarks with two names.
- An unknown address is said in words, not "?".
- A refused attempt reads as one in the security log ("Turning on two-step verification
  refused"), not as a change made followed by "refused".
- "Your details": a bad e-mail address with no password tells both at once, under the
  summary "Some input is not valid." (not one field's "This field is required.").
- The sandbox's page: "Reference: %(ref)s" is one sentence to translate."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select, update

from simcharge.accounts.models import Account
from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import AuthSession, SecurityEvent
from simcharge.auth.service import policy
from simcharge.auth.sessions import open_session
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from tests.auth.helpers import problem
from tests.portal.helpers import (
    PASSWORD,
    csrf_of,
    new_customer,
    portal_order,
    post_form,
    sign_in,
    two_step_on,
)

NOT_RIGHT = "That code is not right. Enter the code your app shows now."
KEY = re.compile(r'data-testid="totp-key">([A-Z2-7 ]+)<')


def _field_error(html: str, name: str) -> str:
    found = re.search(rf'<p class="error" id="e-{name}">([^<]*)</p>', html)
    assert found, f"no error beside {name}"
    return found.group(1)


def _setup(html: str) -> str:
    found = re.search(r'name="setup" value="([^"]+)"', html)
    assert found, "no set-up token on the page"
    return found.group(1)


def _summary(html: str) -> str:
    found = re.search(r'<div class="alert bad" role="alert" tabindex="-1" autofocus>([^<]*)</div>',
                      html)
    assert found, "no focused summary"
    return found.group(1)


async def _account(db: Database, account_id: uuid.UUID) -> Account:
    async with db.read() as s:
        found = await s.get(Account, account_id)
    assert found is not None
    return found


async def _refusals(db: Database, account_id: uuid.UUID, kind: str) -> list[int]:
    async with db.read() as s:
        rows = (await s.execute(
            select(SecurityEvent.details).where(
                SecurityEvent.account_id == account_id, SecurityEvent.kind == kind,
                SecurityEvent.success.is_(False),
            ).order_by(SecurityEvent.created_at)
        )).scalars().all()  # fmt: skip
    return [d["consecutive_failures"] for d in rows]


# --- 1. the set-up again after a wrong code ------------------------------------------------------


async def test_a_wrong_code_at_set_up_shows_the_same_set_up_again(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/security", "/account/security/totp",
                        {"password": PASSWORD})
    assert r.status_code == 200
    shown = KEY.search(r.text)
    assert shown
    key = shown.group(1)
    qr = re.search(r'<img class="qr" src="([^"]+)"', r.text)
    assert qr
    sealed = (await _account(db, customer.account_id)).totp_secret_sealed

    # A wrong code: the set-up page again, the same key and QR code, the error at the field.
    r = await client.post("/account/security/totp/confirm",
                          data={"csrf": csrf_of(r.text), "code": "000000", "setup": _setup(r.text)})
    assert r.status_code == 401, r.text
    assert "<h1>Set up two-step verification</h1>" in r.text
    again = KEY.search(r.text)
    assert again and again.group(1) == key
    assert f'<img class="qr" src="{qr.group(1)}"' in r.text
    assert _field_error(r.text, "code") == NOT_RIGHT
    assert _summary(r.text) == NOT_RIGHT
    assert "recovery" not in _summary(r.text).lower()
    field = re.search(r'<input id="f-code"[^>]*>', r.text)
    assert field
    assert 'aria-invalid="true"' in field.group(0)
    assert 'aria-describedby=" e-code"' in field.group(0)
    assert 'action="/account/security/totp/confirm"' in r.text
    # Not turned on; the pending secret kept; the attempt counted and logged as before.
    account = await _account(db, customer.account_id)
    assert account.totp_enabled_at is None and account.totp_secret_sealed == sealed
    assert await _refusals(db, customer.account_id, "totp_enabled") == [1]

    # Twice wrong (not digits this time): counted again, still the same set-up.
    r = await client.post("/account/security/totp/confirm",
                          data={"csrf": csrf_of(r.text), "code": "abc", "setup": _setup(r.text)})
    assert r.status_code == 401 and _field_error(r.text, "code") == NOT_RIGHT
    again = KEY.search(r.text)
    assert again and again.group(1) == key
    assert await _refusals(db, customer.account_id, "totp_enabled") == [1, 2]

    # The app's code of that same key turns it on.
    r = await client.post("/account/security/totp/confirm", data={
        "csrf": csrf_of(r.text), "code": pyotp.TOTP(key.replace(" ", "")).now()})
    assert r.status_code == 200 and "recovery-codes" in r.text
    assert (await _account(db, customer.account_id)).totp_enabled_at is not None


async def test_the_set_up_is_shown_again_to_its_own_session_only_and_while_fresh(
    client: httpx.AsyncClient, app: Any, db: Database, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The round's security review: the key was shown again to any session of the account
    posting a wrong code — a stolen cookie, without the password, saw it and turned two-step on
    with it. Now only the session that gave the password and saw the key, for
    `SETUP_SHOWN_FOR`, and only for a wrong code."""
    from simcharge.portal import security as security_page

    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/security", "/account/security/totp",
                        {"password": PASSWORD})
    shown = KEY.search(r.text)
    assert shown
    key, token = shown.group(1), _setup(r.text)

    # Another session of the same account (another device, or a stolen cookie).
    async def other_session(s: Any) -> str:
        issued = await open_session(
            s, settings.secret_key, account_id=customer.account_id,
            client=ClientInfo(ip="203.0.113.50", user_agent="elsewhere"),
            policy=policy(settings), now=utcnow(),
        )
        return issued.token

    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=str(client.base_url))
    try:
        other.cookies.set("sc_session", await db.run(other_session))
        page = await other.get("/account/security")
        for setup in ("", token, "0.0", "x" * 80):
            r2 = await other.post("/account/security/totp/confirm",
                                  data={"csrf": csrf_of(page.text), "code": "000000",
                                        "setup": setup})  # fmt: skip
            assert r2.status_code == 401
            assert key not in r2.text and "totp-key" not in r2.text
            assert 'class="qr"' not in r2.text
    finally:
        await other.aclose()
    assert (await _account(db, customer.account_id)).totp_enabled_at is None

    # Its own session, past SETUP_SHOWN_FOR: the security page, no key.
    later = utcnow() + timedelta(seconds=security_page.SETUP_SHOWN_FOR + 5)
    monkeypatch.setattr(security_page, "utcnow", lambda: later)
    r = await client.post("/account/security/totp/confirm",
                          data={"csrf": csrf_of(r.text), "code": "000000", "setup": token})
    assert r.status_code == 401 and key not in r.text and "totp-key" not in r.text


async def test_a_code_with_no_set_up_to_go_on_with_goes_back_to_security(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    # No set-up started: the security page says to start one (nothing to show again).
    r = await post_form(client, "/account/security", "/account/security/totp/confirm",
                        {"code": "123456"})
    assert r.status_code == 409
    assert "<h1>Security</h1>" in r.text and 'data-testid="totp-key"' not in r.text
    assert _summary(r.text) == "Start setting up two-step verification first."
    # On already: the security page too, never the secret again.
    _, _, token = await two_step_on(client)
    client.cookies.set("sc_session", token)
    r = await post_form(client, "/account/security", "/account/security/totp/confirm",
                        {"code": "123456"})
    assert r.status_code == 409 and 'data-testid="totp-key"' not in r.text
    assert _summary(r.text) == "Two-step verification is already on."


async def test_the_api_says_the_set_up_wording_and_sign_in_keeps_its_own(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    bearer = {"Authorization": f"Bearer {customer.token}"}
    r = await client.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=bearer)
    assert r.status_code == 200, r.text
    r = await client.post("/api/v1/me/totp/confirm", json={"code": "000000"}, headers=bearer)
    body = problem(r)
    assert r.status_code == 401 and body["type"] == "/problems/invalid-second-factor"
    assert body["detail"] == NOT_RIGHT and body["field"] == "code"
    # The sign-in's second step: its own words (a recovery code works there).
    from simcharge.auth.service import InvalidSecondFactor

    assert InvalidSecondFactor().detail == "The authenticator or recovery code is wrong."


# --- 2-4. the sessions' landmarks, an unknown address, refused attempts ---------------------------


async def test_sessions_landmarks_have_two_names_and_an_unknown_address_is_said(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)

    async def run(s: object) -> None:
        from sqlalchemy.ext.asyncio import AsyncSession

        assert isinstance(s, AsyncSession)
        await s.execute(update(AuthSession).where(AuthSession.account_id == customer.account_id)
                        .values(ip=None))
        await record_event(s, EventKind.password_reset_requested,
                           account_id=customer.account_id, client=None)

    await db.run(run)
    page = (await client.get("/account/security")).text
    section = re.search(r'<section class="card" aria-labelledby="(s-sessions)">\s*<h2 id="s-sessions">'
                        r"([^<]+)</h2>", page)
    region = re.search(r'role="region" aria-labelledby="(t-sessions)"', page)
    caption = re.search(r'<caption class="vh" id="t-sessions">([^<]+)</caption>', page)
    assert section and region and caption
    assert section.group(2) == "Where you are signed in" and caption.group(1) == "Sessions"
    assert 'tabindex="0" role="region"' in page  # the scrolling table is still reached by keys
    sessions = page.split('id="s-sessions"', 1)[1].split("</section>", 1)[0]
    history = page.split('id="s-history"', 1)[1].split("</section>", 1)[0]
    assert '<td><span class="muted">address unknown</span></td>' in sessions
    assert " · address unknown</span>" in history
    assert "?" not in re.sub(r'(href|action)="[^"]*"', "", sessions + history)


async def test_a_refused_attempt_reads_as_one(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    where = ClientInfo(ip="203.0.113.5", user_agent="pytest")

    async def run(s: object) -> None:
        from sqlalchemy.ext.asyncio import AsyncSession

        assert isinstance(s, AsyncSession)
        for kind in (EventKind.totp_enabled, EventKind.password_changed, EventKind.login,
                     EventKind.login_locked_out, EventKind.passkey_second_factor_disabled):
            await record_event(s, kind, account_id=customer.account_id, client=where,
                               success=False)

    await db.run(run)
    page = (await client.get("/account/security")).text
    history = page.split('id="s-history"', 1)[1].split("</section>", 1)[0]
    assert "<strong>Turning on two-step verification refused</strong>" in history
    assert "<strong>Password change refused</strong>" in history
    assert ("<strong>Turning off two-step sign-in with a passkey refused</strong>"
            in history)
    # Labels that say the refusal already: said once.
    assert "<strong>Sign-in refused: too many attempts</strong>" in history
    assert "too many attempts — " not in history
    # A sign-in (a noun: it reads as an attempt) keeps "— refused".
    assert "Sign-in — <strong>refused</strong>" in history
    assert "Two-step verification turned on" not in history
    assert "Password changed" not in history


async def test_the_refused_wording_for_every_kind_logged_as_refused() -> None:
    """Each kind a refusal is logged as has a wording of its own or a noun label."""
    from simcharge.portal.security import EVENT_LABELS, REFUSED_LABELS

    nouns = {EventKind.login}
    for kind in REFUSED_LABELS:
        assert kind in EVENT_LABELS
    logged_refused = {
        EventKind.registration_attempt_on_taken_contact, EventKind.code_rejected,
        EventKind.login_locked_out, EventKind.login, EventKind.passkey_sign_count_regressed,
        EventKind.line_attached, EventKind.csrf_refused, EventKind.password_changed,
        EventKind.totp_enrolment_started, EventKind.totp_enabled, EventKind.totp_disabled,
        EventKind.recovery_codes_regenerated, EventKind.passkey_added,
        EventKind.passkey_second_factor_enabled, EventKind.passkey_second_factor_disabled,
        EventKind.passkey_removed, EventKind.account_closed, EventKind.contact_change_requested,
    }
    assert logged_refused - nouns <= set(REFUSED_LABELS)


# --- 5. "Your details": every field error at once ------------------------------------------------


async def _details(client: httpx.AsyncClient, **data: str) -> httpx.Response:
    return await post_form(client, "/account/profile", "/account/profile/details", data)


async def test_a_bad_address_with_no_password_tells_both(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await _details(client, display_name="", email="not-an-address", phone="")
    assert r.status_code == 422, r.text
    assert _field_error(r.text, "email") == "This is not a valid e-mail address."
    assert _field_error(r.text, "current_password") == "This field is required."
    assert _summary(r.text) == "Some input is not valid."
    assert 'value="not-an-address"' in r.text  # kept as typed
    # A bad number too, and a bad address with the password: told beside each.
    r = await _details(client, display_name="", email="nope@", phone="12",
                       current_password=PASSWORD)
    assert r.status_code == 422
    assert _field_error(r.text, "email") == "This is not a valid e-mail address."
    assert _field_error(r.text, "phone").startswith("This is not a valid phone number")
    assert 'id="e-current_password"' not in r.text
    assert _summary(r.text) == "Some input is not valid."
    # A good new address with no password: the summary does not repeat one field's words.
    r = await _details(client, display_name="", email=f"n-{customer.email}", phone="")
    assert r.status_code == 422
    assert _field_error(r.text, "current_password") == "This field is required."
    assert _summary(r.text) == "Some input is not valid."
    # The address emptied (the only contact): required, beside it.
    r = await _details(client, display_name="", email="", phone="")
    assert r.status_code == 422 and _field_error(r.text, "email") == "This field is required."
    assert _summary(r.text) == "Some input is not valid."
    # A wrong password keeps its own summary (it names the field).
    r = await _details(client, display_name="", email=f"n-{customer.email}", phone="",
                       current_password="not the password")
    assert r.status_code == 401
    assert _summary(r.text) == "The current password is wrong."
    # Nothing changed, nothing counted as a failed password but the wrong one.
    account = await _account(db, customer.account_id)
    assert account.email == customer.email and account.email_pending is None
    async with db.read() as s:
        logged = (await s.execute(select(SecurityEvent.success).where(
            SecurityEvent.account_id == customer.account_id,
            SecurityEvent.kind == "contact_change_requested"))).scalars().all()
    assert list(logged) == [False]


async def test_with_the_app_on_a_bad_address_asks_the_code_too(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    _, _, token = await two_step_on(client)
    client.cookies.set("sc_session", token)
    r = await _details(client, display_name="", email="bad address", phone="",
                       current_password=PASSWORD)
    assert r.status_code == 422
    assert _field_error(r.text, "email") == "This is not a valid e-mail address."
    assert _field_error(r.text, "code") == "This field is required."
    assert _summary(r.text) == "Some input is not valid."


# --- 7. the sandbox's reference --------------------------------------------------------------------


@pytest.mark.usefixtures("shop")
async def test_the_sandbox_reference_is_one_sentence(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    _, pay_url = await portal_order(client, customer.line.id)
    page = (await client.get(pay_url)).text
    assert re.search(r"<p>Reference: <code>[^<]+</code></p>", page), page
    assert "%(ref)s" not in page
