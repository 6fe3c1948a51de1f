"""Review round 7 of accounts, sign-in and sessions: what was wrong, and what is right now.

- A contact change on the profile counted its code send inside the transaction, after the
  password was confirmed there: a transaction run again (deadlock, serialization failure)
  counted the send twice, and a slow Redis held the account's row. Now the password is
  confirmed in a first transaction, the send counted after it, and the change made in a
  second transaction, as every other code send is counted.
- Signing in again in a browser that held a session (the same customer or another) left the
  previous session valid on the server, although the browser had given up its cookie
  (ASVS 3.2.1, 3.3.1). Now the session whose cookie the sign-in replaces is ended.
- A request that a client marks as background (`X-Background: 1`, as the order page's polling
  of its state) renewed the session's idle time: polling kept an idle session alive
  (ASVS 3.3.2). Now such a request is served without noting the session's use.
- The two-step set-up showed the authenticator key as one run of 32 characters; now it is in
  blocks of four, and the key without the spaces is the one verified.
- Ending a session already ended (`DELETE /me/sessions/{id}` or the security page's form sent
  again) logged "session ended" a second time; now a repeated request logs nothing more.
- An e-mail address typed in full width (an input method's) was stored as typed, while a
  sign-in NFKC-normalised the login: that address could never sign in. Now an address is
  NFKC-normalised everywhere.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select

from simcharge.app import create_app
from simcharge.auth.models import AuthSession
from simcharge.config import Settings
from simcharge.db import Database, RetryableError
from simcharge.kit.clock import clock, utcnow
from simcharge.worker.runner import Worker
from tests.auth.helpers import PASSWORD, Deliver, login, new_identity, register, signup, verify
from tests.auth.helpers import Customer as ApiCustomer
from tests.conftest import SmtpInbox
from tests.portal.helpers import PASSWORD as PORTAL_PASSWORD
from tests.portal.helpers import csrf_of, new_customer, post_form, sign_in

# --- a contact change counts its code send once, before its transaction -----------------------


def _spy_on_code_sends(app: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The account code sends counted by the app's limits (the real limits still count)."""
    limits = app.state.rate_limits
    real = limits.hit
    seen: list[str] = []

    async def hit(action: str, key: Any, *args: Any, **kwargs: Any) -> Any:
        if action == "account-code-sends":
            seen.append(str(key))
        return await real(action, key, *args, **kwargs)

    monkeypatch.setattr(limits, "hit", hit)
    return seen


async def test_a_contact_change_run_again_after_a_deadlock_counts_its_code_send_once(
    fresh_db: Database,
    settings: Settings,
    inbox: SmtpInbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: `PATCH /me` with a new e-mail address counted the code send inside its
    transaction, so a transaction run again after a deadlock counted it twice (5 sends an hour:
    a customer lost sends to database contention). Now it is counted once, before."""
    app = create_app(settings, db=fresh_db, run_worker=False)
    sends = _spy_on_code_sends(app, monkeypatch)
    from simcharge.auth import service

    real_record = service.record_event
    failed: list[bool] = []

    async def deadlock_once(session: Any, kind: Any, *args: Any, **kwargs: Any) -> Any:
        # The first run of the change's transaction loses a deadlock after sending the code.
        change = kind == service.EventKind.contact_change_requested
        if change and kwargs.get("success", True) and not failed:
            failed.append(True)
            raise RetryableError("deadlock")
        return await real_record(session, kind, *args, **kwargs)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        customer = await signup(client, inbox, _deliverer(fresh_db, settings), with_phone=False)
        sends.clear()
        monkeypatch.setattr(service, "record_event", deadlock_once)
        r = await client.patch(
            "/api/v1/me",
            headers=customer.auth,
            json={"email": f"new-{customer.email}", "current_password": PASSWORD},
        )
    assert r.status_code == 200, r.text
    assert failed == [True]  # the transaction did run again
    assert r.json()["email_pending"] == f"new-{customer.email}"
    assert len(sends) == 1, sends


def _deliverer(db: Database, settings: Settings) -> Deliver:
    """The outbox worker on `db`, until nothing is due (the `deliver` fixture's, on a database
    of the test's own)."""

    async def run() -> int:
        worker = Worker(db, settings, concurrency=4)
        try:
            return await worker.drain()
        finally:
            await worker.close()

    return run


async def test_a_wrong_password_on_a_contact_change_counts_no_code_send(
    client: httpx.AsyncClient,
    app: Any,
    inbox: SmtpInbox,
    deliver: Deliver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counting the send first must not let a session without the password use up the
    account's sends: a wrong `current_password` is refused and nothing is counted or sent."""
    customer = await signup(client, inbox, deliver, with_phone=False)
    sends = _spy_on_code_sends(app, monkeypatch)
    r = await client.patch(
        "/api/v1/me",
        headers=customer.auth,
        json={"email": f"other-{customer.email}", "current_password": "not-the-password-1"},
    )
    assert r.status_code == 401, r.text
    assert r.json()["type"].endswith("/invalid-credentials") and r.json()["field"] == (
        "current_password"
    )
    assert sends == []
    me = (await client.get("/api/v1/me", headers=customer.auth)).json()
    assert me["email_pending"] is None


# --- signing in again ends the session the browser held ----------------------------------------


async def _live(db: Database, token_of: str, settings: Settings) -> bool:
    from simcharge.auth.sessions import token_hash

    async with db.read() as s:
        row = (
            await s.execute(
                select(AuthSession).where(
                    AuthSession.token_hash == token_hash(settings.secret_key, token_of)
                )
            )
        ).scalar_one()
        return row.revoked_at is None


async def test_signing_in_on_the_portal_while_signed_in_ends_the_previous_session(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Before: a sign-in in a browser already signed in (here as another customer) replaced
    the cookie but left the first session valid on the server; whoever had copied its token
    kept the account. Now the session the browser held is ended."""
    first = await new_customer(db, settings)
    second = await new_customer(db, settings)
    sign_in(client, first)
    page = await client.get("/account")
    assert page.status_code == 200
    r = await client.post(
        "/login",
        data={"csrf": csrf_of(page.text), "login": second.username, "password": PORTAL_PASSWORD},
    )
    assert r.status_code == 303, r.text
    assert r.cookies.get("sc_session") not in (None, first.token)
    assert not await _live(db, first.token, settings)
    old = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {first.token}"})
    assert old.status_code == 401
    client.cookies.set("sc_session", r.cookies["sc_session"])
    assert (await client.get("/api/v1/me")).json()["username"] == second.username


async def test_a_failed_sign_in_while_signed_in_keeps_the_session(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A refused sign-in changes nothing: the session the browser holds stays."""
    first = await new_customer(db, settings)
    sign_in(client, first)
    page = await client.get("/account")
    r = await client.post(
        "/login",
        data={"csrf": csrf_of(page.text), "login": first.username, "password": "wrong-one-123"},
    )
    assert r.status_code == 401
    assert await _live(db, first.token, settings)


async def test_an_api_cookie_sign_in_ends_the_session_of_the_cookie_it_replaces(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """`POST /auth/login` in `mode: cookie` sets the session cookie: the session whose cookie
    it replaces is ended. A bearer sign-in (`mode: token`) replaces no cookie and ends none."""
    first = await new_customer(db, settings)
    second = await new_customer(db, settings)
    sign_in(client, first)
    r = await login(client, second.username, PORTAL_PASSWORD, mode="token")
    assert r.status_code == 200, r.text
    assert await _live(db, first.token, settings)
    r = await login(client, second.username, PORTAL_PASSWORD, mode="cookie")
    assert r.status_code == 200, r.text
    assert not await _live(db, first.token, settings)


# --- background requests do not renew the idle time -------------------------------------------


async def _last_seen(db: Database, session_token: str, settings: Settings) -> Any:
    from simcharge.auth.sessions import token_hash

    async with db.read() as s:
        return (
            await s.execute(
                select(AuthSession.last_seen_at).where(
                    AuthSession.token_hash == token_hash(settings.secret_key, session_token)
                )
            )
        ).scalar_one()


async def test_an_api_request_marked_background_does_not_renew_the_idle_time(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Before: any request renewed the idle timeout, so a client polling in the background
    kept a session alive that nobody used (ASVS 3.3.2). A request marked `X-Background: 1` is
    served, but is not a use: the session still ends after the idle time."""
    customer = await new_customer(db, settings)
    bearer = {"Authorization": f"Bearer {customer.token}"}
    seen = await _last_seen(db, customer.token, settings)
    clock.freeze(utcnow() + timedelta(minutes=settings.session_idle_minutes - 1))
    r = await client.get("/api/v1/me", headers={**bearer, "X-Background": "1"})
    assert r.status_code == 200
    assert await _last_seen(db, customer.token, settings) == seen
    clock.advance(minutes=2)  # past the idle time since the last real use
    r = await client.get("/api/v1/me", headers={**bearer, "X-Background": "1"})
    assert r.status_code == 401
    assert not await _live(db, customer.token, settings)  # ended for its idle time


async def test_an_api_request_not_marked_background_still_renews_the_idle_time(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The other side: an ordinary request is a use and is noted (at most once a minute)."""
    customer = await new_customer(db, settings)
    bearer = {"Authorization": f"Bearer {customer.token}"}
    clock.freeze(utcnow() + timedelta(minutes=settings.session_idle_minutes - 1))
    assert (await client.get("/api/v1/me", headers=bearer)).status_code == 200
    assert await _last_seen(db, customer.token, settings) == utcnow()
    clock.advance(minutes=2)
    assert (await client.get("/api/v1/me", headers=bearer)).status_code == 200


async def test_the_order_page_polling_does_not_keep_an_idle_portal_session_alive(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The order page asks for the order's state every few seconds while it waits; that
    polling (marked background) must not renew the portal session's idle time."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    seen = await _last_seen(db, customer.token, settings)
    clock.freeze(utcnow() + timedelta(minutes=settings.session_idle_minutes - 1))
    await client.get(f"/account/orders/{uuid.uuid4()}/state", headers={"X-Background": "1"})
    assert await _last_seen(db, customer.token, settings) == seen
    # The person's own request (a page, the same state asked without the mark) renews it.
    await client.get(f"/account/orders/{uuid.uuid4()}/state")
    assert await _last_seen(db, customer.token, settings) != seen


# --- the authenticator key in blocks of four ---------------------------------------------------


async def test_the_two_step_key_is_shown_in_blocks_of_four_and_verifies_as_one(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Before: the key for manual entry was 32 characters in one run, hard to type without a
    mistake. Now it is shown in blocks of four; the key without the spaces is the secret
    the codes are checked against (the QR code's URI is unchanged)."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(
        client, "/account/security", "/account/security/totp", {"password": PORTAL_PASSWORD}
    )
    assert r.status_code == 200, r.text
    shown = re.search(r'data-testid="totp-key">([A-Z2-7 ]+)<', r.text)
    assert shown, r.text
    blocks = shown.group(1).split(" ")
    assert len(blocks) == 8 and all(len(b) == 4 for b in blocks), blocks
    secret = "".join(blocks)
    r = await client.post(
        "/account/security/totp/confirm",
        data={"csrf": csrf_of(r.text), "code": pyotp.TOTP(secret).now()},
    )
    assert r.status_code == 200, r.text
    assert "recovery-codes" in r.text


# --- ending a session twice ends it once -------------------------------------------------------


async def _other_session(db: Database, settings: Settings, account_id: uuid.UUID) -> uuid.UUID:
    from simcharge.auth.client import ClientInfo
    from simcharge.auth.service import policy
    from simcharge.auth.sessions import open_session

    async def run(s: Any) -> uuid.UUID:
        issued = await open_session(
            s, settings.secret_key, account_id=account_id,
            client=ClientInfo(ip="203.0.113.7", user_agent="other-device"),
            policy=policy(settings), now=utcnow(),
        )  # fmt: skip
        return issued.session.id

    return await db.run(run)


async def _ended_events(client: httpx.AsyncClient, headers: dict[str, str]) -> list[Any]:
    events = (await client.get("/api/v1/me/security-events", headers=headers)).json()
    return [e for e in events if e["kind"] == "session_revoked"]


async def test_ending_a_session_again_does_not_log_it_ended_again(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Before: `DELETE /me/sessions/{id}` sent twice (a retry, a double click) logged "session
    ended" twice, the second time for a session already over. A repeated request does nothing
    twice: the answer is the same, the log has one entry."""
    customer = await new_customer(db, settings)
    bearer = {"Authorization": f"Bearer {customer.token}"}
    other = await _other_session(db, settings, customer.account_id)
    for _ in range(2):
        r = await client.delete(f"/api/v1/me/sessions/{other}", headers=bearer)
        assert r.status_code == 200, r.text
    assert len(await _ended_events(client, bearer)) == 1


async def test_ending_a_session_again_on_the_security_page_does_not_log_it_again(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The same on the security page: the form sent twice ends the session once, logs it once."""
    customer = await new_customer(db, settings)
    other = await _other_session(db, settings, customer.account_id)
    sign_in(client, customer)
    page = await client.get("/account/security")
    for _ in range(2):
        r = await client.post(
            f"/account/security/sessions/{other}/end", data={"csrf": csrf_of(page.text)}
        )
        assert r.status_code == 303, r.text
    bearer = {"Authorization": f"Bearer {customer.token}"}
    assert len(await _ended_events(client, bearer)) == 1


# --- an e-mail address is the same address at registration and at sign-in ---------------------


async def test_an_address_typed_in_full_width_signs_in_as_it_was_registered(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """Before: a sign-in NFKC-normalised the login (full-width letters, as a Chinese or
    Japanese input method types them, became ASCII), but registration and a profile change
    kept the address as typed. An address given in full width was stored so, and signing in
    with that very address looked for another one: "wrong login or password" for ever. Now an
    address is normalised the same way everywhere: the code goes to the ASCII address, and the
    address as typed signs in."""
    username, email, _ = new_identity(with_phone=False)
    typed = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in email.split("@")[0])
    typed += "@example.com"
    assert typed != email
    r = await register(client, username=username, email=typed, phone=None)
    assert r.status_code == 202, r.text
    await deliver()
    customer = ApiCustomer(username, PASSWORD, email, None)
    assert (await verify(client, customer, "email", inbox.last_code(email))).status_code == 200
    r = await login(client, typed)
    assert r.status_code == 200, r.text
    assert r.json()["account"]["email"] == email
