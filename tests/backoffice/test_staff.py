"""Staff sign-in with a mandatory authenticator, sessions, CSRF, roles, and the audit log."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice.models import AuditEntry, Role, StaffSession
from simcharge.backoffice.roles import ROLE_PERMISSIONS, Permission
from simcharge.backoffice.staff import StaffExists, create_staff
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import ValidationFailed
from simcharge.kit.clock import clock, utcnow
from tests.backoffice.helpers import (
    STAFF_PASSWORD,
    code_for,
    csrf_of,
    new_staff,
    web_sign_in,
)
from tests.conftest import Backend


async def _audit(db: Database, action: str) -> list[AuditEntry]:
    async with db.read() as s:
        return list(
            (await s.execute(select(AuditEntry).where(AuditEntry.action == action))).scalars()
        )


async def test_first_sign_in_enrols_the_authenticator_then_asks_for_a_code(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    # One TOTP time step throughout: the replay below must meet the very step already used.
    clock.freeze(utcnow())
    staff = await new_staff(db, settings, "agent", enrolled=False)
    assert (await client.get("/backoffice")).headers["location"] == "/backoffice/login"
    await web_sign_in(client, staff)
    page = await client.get("/backoffice")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text
    assert await _audit(db, "staff.totp_enrolled")
    # A second sign-in asks for a code only (no secret shown again).
    client.cookies.clear()
    login = await client.get("/backoffice/login")
    await client.post(
        "/backoffice/login",
        data={"username": staff.username, "password": STAFF_PASSWORD, "csrf": csrf_of(login.text)},
    )
    page = await client.get("/backoffice/login/code")
    assert 'class="secret"' not in page.text
    # The code already used is refused (each step once); the next one works.
    r = await client.post(
        "/backoffice/login/code",
        data={"code": code_for(staff.secret or ""), "csrf": csrf_of(page.text)},
    )
    assert r.headers["location"] == "/backoffice/login/code?error=code"
    r = await client.post(
        "/backoffice/login/code",
        data={"code": code_for(staff.secret or "", 1), "csrf": csrf_of(page.text)},
    )
    assert r.headers["location"] == "/backoffice"


async def test_a_password_alone_opens_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "admin")
    login = await client.get("/backoffice/login")
    await client.post(
        "/backoffice/login",
        data={"username": staff.username, "password": STAFF_PASSWORD, "csrf": csrf_of(login.text)},
    )
    for path in ("/backoffice", "/backoffice/audit"):
        r = await client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/backoffice/login/code"
    # nor does the half-open cookie work as an API token
    token = client.cookies.get("sc_staff")
    r = await client.get("/api/v1/admin/audit", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


async def test_wrong_password_or_unknown_user_same_answer_and_audited(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "agent")
    for username, password in ((staff.username, "wrong-password-123"), ("nobody", "x" * 10)):
        login = await client.get("/backoffice/login")
        r = await client.post(
            "/backoffice/login",
            data={"username": username, "password": password, "csrf": csrf_of(login.text)},
        )
        assert r.status_code == 401
        assert "not correct" in r.text
    assert len(await _audit(db, "staff.login_failed")) == 2


async def test_login_form_needs_its_token(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "agent")
    r = await client.post(
        "/backoffice/login",
        data={"username": staff.username, "password": STAFF_PASSWORD, "csrf": "forged"},
    )
    assert r.status_code == 403


async def test_five_wrong_passwords_lock_the_staff_account(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "agent")
    for _ in range(5):
        login = await client.get("/backoffice/login")
        await client.post(
            "/backoffice/login",
            data={
                "username": staff.username,
                "password": "not-the-password",
                "csrf": csrf_of(login.text),
            },
        )
    login = await client.get("/backoffice/login")
    r = await client.post(
        "/backoffice/login",
        data={"username": staff.username, "password": STAFF_PASSWORD, "csrf": csrf_of(login.text)},
    )
    assert r.status_code == 401


async def _password_step(client: httpx.AsyncClient, username: str, password: str) -> int:
    login = await client.get("/backoffice/login")
    r = await client.post("/backoffice/login", data={
        "username": username, "password": password, "csrf": csrf_of(login.text)})  # fmt: skip
    return r.status_code


async def _code_step(client: httpx.AsyncClient, code: str) -> httpx.Response:
    page = await client.get("/backoffice/login/code")
    if page.status_code != 200:
        return page
    return await client.post("/backoffice/login/code",
                             data={"code": code, "csrf": csrf_of(page.text)})  # fmt: skip


async def test_the_code_cannot_be_guessed_through_many_half_open_sessions(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The lockout bounds guesses at the authenticator's code too: one half-open session per
    staff member, each lock ends it, and a locked member's code is not looked at."""
    staff = await new_staff(db, settings, "agent")
    assert staff.secret
    other = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    async with other:
        # A second password step ends the first half-open session: its code page is gone.
        assert await _password_step(client, staff.username, STAFF_PASSWORD) == 303
        assert await _password_step(other, staff.username, STAFF_PASSWORD) == 303
        r = await _code_step(client, code_for(staff.secret))
        assert r.status_code in (303, 401) and r.headers.get("location") != "/backoffice"
        assert (await client.get("/backoffice")).status_code == 303  # not signed in
        # Five wrong codes lock the member and end the half-open session they came through.
        for _ in range(5):
            r = await _code_step(other, "000000")
            assert r.headers.get("location") != "/backoffice"
        r = await _code_step(other, code_for(staff.secret))
        assert r.headers.get("location") != "/backoffice"
        assert (await other.get("/backoffice")).status_code == 303
        assert await _password_step(other, staff.username, STAFF_PASSWORD) == 401
    async with db.read() as s:
        rows = (await s.execute(select(StaffSession).where(
            StaffSession.staff_id == staff.id, StaffSession.mfa.is_(False)))).scalars().all()
    assert rows and all(r.revoked_at is not None for r in rows)


async def test_a_code_of_non_ascii_digits_is_a_wrong_code(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Superscript digits are digits to `str.isdigit`; comparing them in constant time raised a
    TypeError (a 500). Now they are a wrong code, shown on the page, and the right one works."""
    staff = await new_staff(db, settings, "agent")
    assert staff.secret
    assert await _password_step(client, staff.username, STAFF_PASSWORD) == 303
    r = await _code_step(client, "²³¹²³¹")
    assert r.status_code == 303 and r.headers["location"] == "/backoffice/login/code?error=code"
    r = await _code_step(client, code_for(staff.secret))
    assert r.status_code == 303 and r.headers["location"] == "/backoffice"


async def test_a_locked_member_s_correct_code_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "agent")
    assert staff.secret
    assert await _password_step(client, staff.username, STAFF_PASSWORD) == 303
    # Locked meanwhile (five wrong passwords from elsewhere): the right code opens nothing.
    for _ in range(5):
        assert await _password_step(client.__class__(
            transport=client._transport, base_url=str(client.base_url)), staff.username,
            "not-the-password") == 401  # fmt: skip
    r = await _code_step(client, code_for(staff.secret))
    assert r.headers.get("location") != "/backoffice"
    assert (await client.get("/backoffice")).status_code == 303


async def test_sign_in_is_limited_per_address(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Beside each member's lockout, one address gets 30 password steps a minute, whoever for."""
    for n in range(30):
        assert await _password_step(client, f"nobody{n}", "not-the-password") == 401
    staff = await new_staff(db, settings, "agent")
    login = await client.get("/backoffice/login")
    r = await client.post("/backoffice/login", data={
        "username": staff.username, "password": STAFF_PASSWORD, "csrf": csrf_of(login.text)})  # fmt: skip
    assert r.status_code == 429 and "Too many attempts" in r.text
    assert "set-cookie" not in r.headers or "sc_staff" not in r.headers["set-cookie"]


async def test_forms_need_the_session_csrf_token(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, staff)
    r = await client.post("/backoffice/logout", data={"csrf": "forged"})
    assert r.status_code == 403
    assert (await client.get("/backoffice")).status_code == 200
    r = await client.post("/backoffice/logout", data={"csrf": csrf})
    assert r.status_code == 303
    assert (await client.get("/backoffice")).status_code == 303
    assert await _audit(db, "staff.logout")


async def test_api_sign_in_with_password_and_code(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "admin")
    assert staff.secret
    body: dict[str, Any] = {
        "username": staff.username,
        "password": STAFF_PASSWORD,
        "code": code_for(staff.secret),
    }
    r = await client.post("/api/v1/admin/session", json=body)
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert "audit.read" in r.json()["permissions"]
    r = await client.get("/api/v1/admin/audit", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert any(e["action"] == "staff.login" for e in r.json())
    # the same code twice: refused
    r = await client.post("/api/v1/admin/session", json=body)
    assert r.status_code == 401 and r.json()["type"] == "/problems/staff-login-failed"
    r = await client.delete("/api/v1/admin/session", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 204
    r = await client.get("/api/v1/admin/audit", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


async def test_staff_not_enrolled_cannot_get_an_api_token(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "admin", enrolled=False)
    r = await client.post(
        "/api/v1/admin/session",
        json={"username": staff.username, "password": STAFF_PASSWORD, "code": "123456"},
    )
    assert r.status_code == 401


@pytest.mark.parametrize("role", ["agent", "finance"])
async def test_only_admins_read_the_audit_log_and_refusals_are_audited(
    client: httpx.AsyncClient, db: Database, settings: Settings, role: str
) -> None:
    staff = await new_staff(db, settings, role)
    r = await client.get("/api/v1/admin/audit", headers=staff.auth)
    assert r.status_code == 403 and r.json()["type"] == "/problems/forbidden"
    await web_sign_in(client, staff)
    assert (await client.get("/backoffice/audit")).status_code == 403
    denied = await _audit(db, "access.denied")
    assert len(denied) == 2 and denied[0].actor == f"staff:{staff.username}"


async def test_api_keys_get_only_their_scopes(client: httpx.AsyncClient, db: Database) -> None:
    key = await db.run(lambda s: create_api_key(s, "crm", ["orders:read"]))
    r = await client.get("/api/v1/admin/audit", headers={"Authorization": f"Bearer {key.token}"})
    assert r.status_code == 403
    r = await client.get("/api/v1/admin/audit", headers={"Authorization": "Bearer sck_x_y"})
    assert r.status_code == 401
    r = await client.get("/api/v1/admin/audit")
    assert r.status_code == 401


async def test_the_audit_log_is_append_only(
    db: Database, settings: Settings, backend: Backend
) -> None:
    await new_staff(db, settings, "agent")

    async def write(s: Any) -> None:
        from simcharge.backoffice import audit
        from simcharge.backoffice.audit import Actor

        await audit.record(s, Actor(name="staff:x", permissions=frozenset()), "test.action")

    await db.run(write)
    statements = ["UPDATE audit_entries SET action = 'changed'", "DELETE FROM audit_entries"]
    if backend.is_postgres:  # SQLite has no TRUNCATE (its DELETE without WHERE is refused above)
        statements.append("TRUNCATE audit_entries")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.transaction() as s:
                await s.execute(text(statement))
    async with db.read() as s:
        assert (await s.execute(text("SELECT count(*) FROM audit_entries"))).scalar_one() == 1


def test_the_roles_table() -> None:
    agent, finance, admin = (ROLE_PERMISSIONS[r] for r in (Role.agent, Role.finance, Role.admin))
    assert Permission.refunds_create not in agent and Permission.refunds_create in finance
    assert Permission.adjustments_approve not in agent
    assert Permission.accounts_unlock in agent and Permission.accounts_unlock not in finance
    assert Permission.catalog_edit in admin and Permission.catalog_edit not in finance
    assert admin == frozenset(Permission)


async def test_create_staff_validates(db: Database) -> None:
    async with db.transaction() as s:
        await create_staff(
            s, username="Alice", display_name="Alice", role="agent", password=STAFF_PASSWORD
        )
    with pytest.raises(StaffExists):
        async with db.transaction() as s:
            await create_staff(
                s, username="alice", display_name="A", role="agent", password=STAFF_PASSWORD
            )
    for kwargs in ({"role": "boss"}, {"username": "a b"}, {"password": "password"}):
        args: dict[str, Any] = {
            "username": "bob",
            "display_name": "Bob",
            "role": "agent",
            "password": STAFF_PASSWORD,
            **kwargs,
        }
        with pytest.raises(ValidationFailed):
            async with db.transaction() as s:
                await create_staff(s, **args)


async def test_the_admin_api_is_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/api/v1/admin/session",
        "/api/v1/admin/customers",
        "/api/v1/admin/tickets",
        "/api/v1/admin/lines/{line_id}/adjustments",
        "/api/v1/admin/attention",
        "/api/v1/admin/catalog/{kind}/{code}",
        "/api/v1/admin/reports/{name}",
        "/api/v1/admin/lines/{line_id}/usage",
        "/api/v1/admin/catalog/tariffs/{code}/versions",
        "/api/v1/admin/jobs",
        "/api/v1/admin/jobs/{job_id}/discard",
        "/api/v1/me/tickets",
    ):
        assert path in spec["paths"], path
    assert not any(p.startswith("/backoffice") for p in spec["paths"])


async def test_admins_manage_staff(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    agent = await new_staff(db, settings, "agent")
    url = f"/api/v1/admin/staff/{agent.id}"
    r = await client.get("/api/v1/admin/staff", headers=agent.auth)
    assert r.status_code == 403
    r = await client.patch(url, headers=admin.auth, json={"role": "boss"})
    assert r.status_code == 422
    r = await client.patch(
        f"/api/v1/admin/staff/{admin.id}", headers=admin.auth, json={"active": False}
    )
    assert r.status_code == 409 and r.json()["type"] == "/problems/staff-cannot-change-self"
    # a role change ends the member's sessions
    r = await client.patch(url, headers=admin.auth, json={"role": "finance"})
    assert r.status_code == 200 and r.json()["role"] == "finance"
    assert (await client.get("/api/v1/admin/attention", headers=agent.auth)).status_code == 401
    # a lost phone: enrol again at the next sign-in
    r = await client.patch(url, headers=admin.auth, json={"reset_totp": True})
    assert r.json()["totp_enrolled"] is False
    agent.secret = None
    await web_sign_in(client, agent)  # shows a new secret, enrols it
    client.cookies.clear()
    r = await client.patch(url, headers=admin.auth, json={"active": False})
    assert r.json()["active"] is False
    login = await client.get("/backoffice/login")
    r = await client.post(
        "/backoffice/login",
        data={"username": agent.username, "password": STAFF_PASSWORD, "csrf": csrf_of(login.text)},
    )
    assert r.status_code == 401
    actions = [e.action for e in await _audit(db, "staff.change")]
    assert len(actions) == 3
    csrf = await web_sign_in(client, admin)
    page = await client.get("/backoffice/staff")
    assert agent.username in page.text
    r = await client.post(f"/backoffice/staff/{agent.id}", data={"csrf": csrf, "access": "on"})
    assert r.status_code == 303


async def test_the_back_office_speaks_chinese(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "agent", language="zh-Hans")
    csrf = await web_sign_in(client, staff)
    page = await client.get("/backoffice")
    assert 'lang="zh-Hans"' in page.text and "工单" in page.text and "查找客户" in page.text
    r = await client.post("/backoffice/language", data={"csrf": csrf, "language": "es"})
    assert r.status_code == 303
    page = await client.get("/backoffice")
    assert "Buscar un cliente" in page.text
    assert "Find a customer" in (await client.get("/backoffice?lang=en")).text
