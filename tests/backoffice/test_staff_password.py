"""Staff passwords: changed by their owner, reset by an admin or on the server.

What was wrong: a staff member could not change their password at all — no page, no API, no
admin reset, no command (OWASP ASVS 4.0.3 V2.1.5, V2.1.6; V3.3.3). A password given at
`simcharge staff create` stayed for good, a leaked one could only be stopped by switching the
account off, and a forgotten one locked its owner out for good.

What is right now:
- `/backoffice/password` (linked from the home page) and `POST /api/v1/admin/password` take the
  current password and the new one (the page a confirmation too); the new one follows the
  customers' policy (`auth/passwords.py`: 12 to 128 characters, not common or breached, not the
  username); refusals come back beside the form's fields (problem+json with the field on the
  API) and change nothing;
- a wrong current password counts as a failed sign-in: the member's lockout (five, then 15
  minutes during which even the right one is refused) and the address's sign-in limit;
- success ends every other session of the member's (browsers and API tokens), keeps this one
  under a new token, and is audited (`staff.password_changed`, never the password);
- an admin sets another member's password (`/backoffice/staff`, `POST
  /api/v1/admin/staff/{id}/password`, `staff.manage`), which ends all their sessions and lifts
  their lockout (`staff.password_reset`); their own they change with the current one;
- `simcharge staff password NAME` does the same on the server (prompted, hidden);
- and (a smaller gap) staff open a customer's receipt PDF from the order panel: the very PDF the
  customer gets, the read audited.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.apikeys import create_api_key
from simcharge.auth.passwords import verify_password
from simcharge.backoffice.models import AuditEntry, StaffSession, StaffUser
from simcharge.backoffice.staff import open_staff_session
from simcharge.config import Settings, get_settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.fulfilment import issue_receipt_number
from tests.backoffice.helpers import (
    STAFF_PASSWORD,
    Staff,
    csrf_of,
    new_staff,
    staff_row,
    web_sign_in,
)
from tests.orders.helpers import new_payer, pay_at_sandbox, place
from tests.test_cli import invoke

NEW_PASSWORD = "copper-kettle-rain-8821"


async def _audit(db: Database, action: str, staff_id: uuid.UUID | None = None) -> list[AuditEntry]:
    stmt = select(AuditEntry).where(AuditEntry.action == action)
    if staff_id is not None:
        stmt = stmt.where(AuditEntry.target_id == str(staff_id))
    async with db.read() as s:
        return list((await s.execute(stmt.order_by(AuditEntry.at))).scalars())


async def _open_sessions(db: Database, staff_id: uuid.UUID) -> list[StaffSession]:
    async with db.read() as s:
        rows = await s.execute(
            select(StaffSession).where(
                StaffSession.staff_id == staff_id, StaffSession.revoked_at.is_(None)
            )
        )
        return list(rows.scalars())


def _field_error(html: str, field: str) -> str | None:
    found = re.search(rf'id="[^"]*-{field}-error">([^<]*)</p>', html)
    return found.group(1) if found else None


async def _change_on_page(
    client: httpx.AsyncClient, current: str, new: str, confirm: str | None = None
) -> httpx.Response:
    page = await client.get("/backoffice/password")
    assert page.status_code == 200, page.text
    return await client.post(
        "/backoffice/password",
        data={
            "csrf": csrf_of(page.text),
            "current_password": current,
            "new_password": new,
            "confirm_password": new if confirm is None else confirm,
        },
    )


async def _can_sign_in_with(client: httpx.AsyncClient, staff: Staff, password: str) -> bool:
    login = await client.get("/backoffice/login")
    r = await client.post(
        "/backoffice/login",
        data={"username": staff.username, "password": password, "csrf": csrf_of(login.text)},
    )
    return r.status_code == 303


async def _signed_in_elsewhere(db: Database, settings: Settings, staff_id: uuid.UUID) -> str:
    """Another browser's session (the authenticator's code was used up by this one)."""

    async def run(s: AsyncSession) -> str:
        staff = await s.get(StaffUser, staff_id)
        assert staff is not None
        issued = await open_staff_session(
            s, settings, staff, ip="198.51.100.7", user_agent="elsewhere", now=utcnow(), mfa=True
        )
        return issued.token

    return await db.run(run)


def _another(client: httpx.AsyncClient) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))


async def test_a_staff_member_changes_their_password_on_the_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The page (linked from the home page) changes the password: the other sessions end (a
    token, another browser), this one stays signed in under a new cookie, the old password no
    longer signs in and the new one does; audited without the password."""
    staff = await new_staff(db, settings, "agent")  # with an API token: another session
    await web_sign_in(client, staff)
    async with _another(client) as elsewhere:
        elsewhere.cookies.set("sc_staff", await _signed_in_elsewhere(db, settings, staff.id))
        assert (await elsewhere.get("/backoffice")).status_code == 200
        home = await client.get("/backoffice")
        assert 'href="/backoffice/password"' in home.text
        old_cookie = client.cookies.get("sc_staff")

        r = await _change_on_page(client, STAFF_PASSWORD, NEW_PASSWORD)
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/backoffice/password?done=password"
        assert client.cookies.get("sc_staff") != old_cookie  # a new token for this session
        done = await client.get(r.headers["location"])
        assert done.status_code == 200
        assert "Your password was changed. Your other sessions have ended." in done.text
        # the others have ended: the API token, the other browser
        assert (await client.get("/api/v1/admin/tickets", headers=staff.auth)).status_code == 401
        assert (await elsewhere.get("/backoffice")).status_code == 303
    # the old cookie's token is no longer this session's
    async with _another(client) as stale:
        stale.cookies.set("sc_staff", old_cookie or "")
        assert (await stale.get("/backoffice")).status_code == 303
    assert len(await _open_sessions(db, staff.id)) == 1
    row = await staff_row(db, staff.id)
    assert verify_password(row.password_hash, NEW_PASSWORD)
    async with _another(client) as fresh:
        assert not await _can_sign_in_with(fresh, staff, STAFF_PASSWORD)
        assert await _can_sign_in_with(fresh, staff, NEW_PASSWORD)
    [entry] = await _audit(db, "staff.password_changed", staff.id)
    assert entry.actor == f"staff:{staff.username}"
    assert entry.details == {"sessions_ended": 2}
    assert NEW_PASSWORD not in str(entry.details) and STAFF_PASSWORD not in str(entry.details)


async def test_a_refused_change_says_why_beside_the_field_and_changes_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A confirmation that differs, a short, common or own-name password, a wrong current
    one: 422 with the reason beside the offending field; the password, the sessions and (but
    for the wrong current password) the failure count are as they were."""
    staff = await new_staff(db, settings, "finance")
    await web_sign_in(client, staff)
    cases = [
        (STAFF_PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x", "confirm_password",
         "The two passwords are not the same."),
        (STAFF_PASSWORD, "short-one", None, "new_password",
         "The password needs at least 12 characters."),
        (STAFF_PASSWORD, "1qaz2wsx3edc", None, "new_password",
         "This password is too common or has appeared in a data breach; choose another."),
        (STAFF_PASSWORD, staff.username.upper(), None, "new_password",
         "The password may not be your username or e-mail address."),
        ("not-my-password-at-all", NEW_PASSWORD, None, "current_password",
         "The current password is wrong."),
    ]  # fmt: skip
    assert len(staff.username) >= 12  # else refused by length first
    for current, new, confirm, field, said in cases:
        r = await _change_on_page(client, current, new, confirm)
        assert r.status_code == 422, (field, r.status_code, r.text)
        assert r.headers["content-type"].startswith("text/html")
        assert _field_error(r.text, field) == said, (field, r.text)
        assert 'aria-invalid="true"' in r.text
    row = await staff_row(db, staff.id)
    assert verify_password(row.password_hash, STAFF_PASSWORD)
    assert row.failed_logins == 1  # the wrong current password only
    assert len(await _open_sessions(db, staff.id)) == 2
    assert not await _audit(db, "staff.password_changed", staff.id)
    assert len(await _audit(db, "staff.password_change_failed", staff.id)) == 1


async def test_the_form_needs_the_session_csrf_token(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Like every back-office form: without the session's CSRF token, 403 and nothing done."""
    staff = await new_staff(db, settings, "agent")
    await web_sign_in(client, staff)
    r = await client.post("/backoffice/password", data={
        "csrf": "forged", "current_password": STAFF_PASSWORD, "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD})  # fmt: skip
    assert r.status_code == 403
    assert verify_password((await staff_row(db, staff.id)).password_hash, STAFF_PASSWORD)


async def test_wrong_current_passwords_lock_the_member_as_failed_sign_ins_do(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Five wrong current passwords lock the member for 15 minutes, as five failed sign-ins
    do: the sixth try is refused even with the right password (429), and so is a sign-in."""
    staff = await new_staff(db, settings, "agent")
    await web_sign_in(client, staff)
    for n in range(4):
        r = await _change_on_page(client, f"wrong-password-{n}", NEW_PASSWORD)
        assert r.status_code == 422
    assert (await staff_row(db, staff.id)).failed_logins == 4
    r = await _change_on_page(client, "wrong-password-5", NEW_PASSWORD)
    assert r.status_code == 422
    row = await staff_row(db, staff.id)
    assert row.locked_until is not None and row.locked_until > utcnow()
    r = await _change_on_page(client, STAFF_PASSWORD, NEW_PASSWORD)
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert _field_error(r.text, "current_password") == "Too many attempts; please wait and try again."
    assert verify_password((await staff_row(db, staff.id)).password_hash, STAFF_PASSWORD)
    async with _another(client) as elsewhere:
        assert not await _can_sign_in_with(elsewhere, staff, STAFF_PASSWORD)
    failed = await _audit(db, "staff.password_change_failed", staff.id)
    assert [e.details for e in failed] == [{"locked": False}] * 4 + [{"locked": True}] * 2


async def test_a_change_counts_toward_the_address_sign_in_limit(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """One address gets 30 password steps a minute, sign-ins and password changes together."""
    staff = await new_staff(db, settings, "agent")
    await web_sign_in(client, staff)  # one password step
    async with _another(client) as other:
        for n in range(29):
            nobody = Staff(uuid.uuid4(), f"nobody{n}", "agent", None)
            assert not await _can_sign_in_with(other, nobody, "not-the-password")
    r = await _change_on_page(client, STAFF_PASSWORD, NEW_PASSWORD)
    assert r.status_code == 429
    assert verify_password((await staff_row(db, staff.id)).password_hash, STAFF_PASSWORD)


async def test_the_api_changes_the_password_and_replaces_the_token(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """`POST /api/v1/admin/password`: problem+json naming the field when refused (nothing
    changed); on success a new token for this session, the old one and every other session
    ended. An API key has no password to change."""
    staff = await new_staff(db, settings, "admin")
    await web_sign_in(client, staff)  # a browser session too
    url = "/api/v1/admin/password"
    r = await client.post(url, headers=staff.auth, json={
        "current_password": "wrong-password-1", "new_password": NEW_PASSWORD})  # fmt: skip
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "/problems/staff-password-wrong"
    assert r.json()["field"] == "current_password"
    r = await client.post(url, headers=staff.auth, json={
        "current_password": STAFF_PASSWORD, "new_password": "1qaz2wsx3edc"})  # fmt: skip
    assert r.status_code == 422
    assert (r.json()["type"], r.json()["field"]) == ("/problems/validation-error", "new_password")
    r = await client.post(url, headers=staff.auth, json={"current_password": STAFF_PASSWORD})
    assert r.status_code == 422 and r.json()["field"] == "new_password"
    assert verify_password((await staff_row(db, staff.id)).password_hash, STAFF_PASSWORD)
    assert len(await _open_sessions(db, staff.id)) == 2

    r = await client.post(url, headers=staff.auth, json={
        "current_password": STAFF_PASSWORD, "new_password": NEW_PASSWORD})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["username"] == staff.username and body["token"] != staff.token
    assert (await client.get("/api/v1/admin/staff", headers=staff.auth)).status_code == 401
    fresh = {"Authorization": f"Bearer {body['token']}"}
    assert (await client.get("/api/v1/admin/staff", headers=fresh)).status_code == 200
    assert (await client.get("/backoffice")).status_code == 303  # the browser's session ended
    assert len(await _open_sessions(db, staff.id)) == 1
    [entry] = await _audit(db, "staff.password_changed", staff.id)
    assert entry.details == {"sessions_ended": 1}

    key = await db.run(lambda s: create_api_key(s, "tool", ["customers:read"]))
    r = await client.post(url, headers={"Authorization": f"Bearer {key.token}"}, json={
        "current_password": STAFF_PASSWORD, "new_password": NEW_PASSWORD})  # fmt: skip
    assert r.status_code == 403 and r.json()["type"] == "/problems/forbidden"


async def test_an_admin_sets_another_member_s_password(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """An admin (`staff.manage`) sets another member's password through the API: every
    session of theirs ends, their lockout is lifted, audited without the password. Not their
    own (409: that takes the current one), not below admin (403), not a weak one (422, field
    `new_password`, nothing changed)."""
    admin = await new_staff(db, settings, "admin")
    member = await new_staff(db, settings, "agent")
    async with _another(client) as other:
        for n in range(5):  # locked out: five wrong passwords
            assert not await _can_sign_in_with(other, member, f"wrong-password-{n}")
    url = f"/api/v1/admin/staff/{member.id}/password"
    r = await client.post(url, headers=admin.auth, json={"new_password": "short"})
    assert r.status_code == 422 and r.json()["field"] == "new_password"
    r = await client.post(url, headers=member.auth, json={"new_password": NEW_PASSWORD})
    assert r.status_code == 403
    r = await client.post(
        f"/api/v1/admin/staff/{admin.id}/password", headers=admin.auth,
        json={"new_password": NEW_PASSWORD},
    )  # fmt: skip
    assert r.status_code == 409 and r.json()["type"] == "/problems/staff-own-password"
    r = await client.post(
        f"/api/v1/admin/staff/{uuid.uuid4()}/password", headers=admin.auth,
        json={"new_password": NEW_PASSWORD},
    )  # fmt: skip
    assert r.status_code == 404
    assert verify_password((await staff_row(db, member.id)).password_hash, STAFF_PASSWORD)
    assert verify_password((await staff_row(db, admin.id)).password_hash, STAFF_PASSWORD)

    r = await client.post(url, headers=admin.auth, json={"new_password": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["username"] == member.username
    row = await staff_row(db, member.id)
    assert verify_password(row.password_hash, NEW_PASSWORD)
    assert row.locked_until is None and row.failed_logins == 0
    assert await _open_sessions(db, member.id) == []
    assert (await client.get("/api/v1/admin/tickets", headers=member.auth)).status_code == 401
    async with _another(client) as other:
        assert await _can_sign_in_with(other, member, NEW_PASSWORD)
    [entry] = await _audit(db, "staff.password_reset", member.id)
    assert entry.actor == f"staff:{admin.username}"
    assert entry.details == {"sessions_ended": 1, "passkeys_removed": 0}
    assert NEW_PASSWORD not in str(entry.details)


async def test_an_admin_sets_a_password_on_the_staff_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The staff page has a password form per other member; a refusal is shown beside that
    member's field, and nothing changes."""
    admin = await new_staff(db, settings, "admin")
    member = await new_staff(db, settings, "agent")
    await web_sign_in(client, admin)
    page = await client.get("/backoffice/staff")
    assert f'action="/backoffice/staff/{member.id}/password"' in page.text
    assert f'action="/backoffice/staff/{admin.id}/password"' not in page.text
    csrf = csrf_of(page.text)
    url = f"/backoffice/staff/{member.id}/password"
    r = await client.post(url, data={
        "csrf": csrf, "new_password": NEW_PASSWORD, "confirm_password": "something-else-1"})  # fmt: skip
    assert r.status_code == 422
    assert _field_error(r.text, "confirm_password") == "The two passwords are not the same."
    assert f'id="p-{member.id}-confirm_password-error"' in r.text
    r = await client.post(url, data={
        "csrf": csrf, "new_password": "1qaz2wsx3edc", "confirm_password": "1qaz2wsx3edc"})  # fmt: skip
    assert r.status_code == 422
    assert f'id="p-{member.id}-new_password-error"' in r.text
    assert verify_password((await staff_row(db, member.id)).password_hash, STAFF_PASSWORD)
    assert len(await _open_sessions(db, member.id)) == 1

    r = await client.post(url, data={
        "csrf": csrf, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "/backoffice/staff?done=staff_password"
    assert verify_password((await staff_row(db, member.id)).password_hash, NEW_PASSWORD)
    assert await _open_sessions(db, member.id) == []
    assert len(await _audit(db, "staff.password_reset", member.id)) == 1


def test_simcharge_staff_password(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`simcharge staff password NAME`: the new password (prompted, or the environment's),
    refused by the policy like anywhere else; every session ends; audited as the OS user."""
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", STAFF_PASSWORD)
    code, out = invoke("staff", "create", "alice", "--role", "finance")
    assert code == 0, out

    async def sign_in_somewhere() -> None:
        db = Database.from_url(cli_env)
        try:
            async with db.transaction() as s:
                staff = (
                    await s.execute(select(StaffUser).where(StaffUser.username == "alice"))
                ).scalar_one()
                await open_staff_session(
                    s, get_settings(), staff, ip=None, user_agent=None, now=utcnow(), mfa=True
                )
        finally:
            await db.dispose()

    asyncio.run(sign_in_somewhere())
    monkeypatch.delenv("SIMCHARGE_STAFF_PASSWORD")
    code, out = invoke("staff", "password", "nobody")
    assert code != 0  # prompted: no input
    code, out = _invoke_with_input(["staff", "password", "nobody"], NEW_PASSWORD)
    assert code == 1 and "no staff member nobody" in out
    code, out = _invoke_with_input(["staff", "password", "alice"], "short")
    assert code == 2 and "new_password" in out
    code, out = _invoke_with_input(["staff", "password", "Alice"], NEW_PASSWORD)
    assert code == 0 and "password set; 1 session(s) ended" in out, out
    assert NEW_PASSWORD not in out.replace("New password", "")

    async def read() -> tuple[StaffUser, list[StaffSession], list[AuditEntry]]:
        db = Database.from_url(cli_env)
        try:
            async with db.read() as s:
                return (
                    (await s.execute(select(StaffUser))).scalar_one(),
                    list((await s.execute(
                        select(StaffSession).where(StaffSession.revoked_at.is_(None))
                    )).scalars()),
                    list((await s.execute(
                        select(AuditEntry).where(AuditEntry.action == "staff.password_reset")
                    )).scalars()),
                )  # fmt: skip
        finally:
            await db.dispose()

    staff, sessions, entries = asyncio.run(read())
    assert verify_password(staff.password_hash, NEW_PASSWORD)
    assert sessions == []
    [entry] = entries
    assert entry.actor == f"cli:{getpass.getuser()}"
    assert entry.user_agent and entry.user_agent.startswith("simcharge staff password on ")
    assert entry.details == {"sessions_ended": 1, "passkeys_removed": 0}


def _invoke_with_input(args: list[str], password: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from simcharge.cli import app

    result = CliRunner().invoke(app, args, input=f"{password}\n{password}\n")
    return result.exit_code, result.output



async def test_staff_open_the_customer_s_receipt_from_the_order(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Secondary gap: staff could resend a receipt but not see it. The order panel links the
    receipt, and staff get the very PDF the customer gets (in the customer's language), the
    read audited as `receipt.view`; an order with no receipt is the refusal page, not a 500."""
    payer = await new_payer(db, settings, language="es")
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled"
    await db.run(lambda s: issue_receipt_number(s, uuid.UUID(order["id"])))
    pending = await place(client, payer)
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)

    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    link = f'href="/backoffice/orders/{order["id"]}/receipt"'
    assert link in page.text
    assert f'href="/backoffice/orders/{pending["id"]}/receipt"' not in page.text
    r = await client.get(f"/backoffice/orders/{order['id']}/receipt")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"].startswith('inline; filename="receipt-R')
    assert r.headers["cache-control"] == "private, no-store"
    mine = await client.get(f"/api/v1/orders/{order['id']}/receipt", headers=payer.auth)
    assert mine.status_code == 200 and mine.content == r.content
    [entry] = await _audit(db, "receipt.view")
    assert (entry.actor, entry.target_type, entry.target_id) == (
        f"staff:{agent.username}", "order", order["id"]
    )
    assert entry.details == {"language": "es"}

    r = await client.get(f"/backoffice/orders/{pending['id']}/receipt")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "This order has no receipt" in r.text
    r = await client.get(f"/backoffice/orders/{uuid.uuid4()}/receipt")
    assert r.status_code == 404
    assert len(await _audit(db, "receipt.view")) == 1
