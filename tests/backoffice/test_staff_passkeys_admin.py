"""Another member's passkeys in the admin API (`/api/v1/admin/staff/{id}/passkeys…`) and on the
command line (`simcharge staff passkeys list|remove`), on SQLite and PostgreSQL.

What was missing: an admin saw how many passkeys a colleague held, and removed all of them,
only on the back office's staff page; the API's staff list said nothing of passkeys (nor of the
member's time zone), and neither the API nor the server's command line could list them or
remove one.

Now: the staff list has `passkey_count` and `time_zone`; the API lists a member's passkeys
(never a public key or a credential id) and removes one (nothing else ends) or all of them
(every session of theirs ends, as on the page), with the page's permission, audit events and
refusals: an unknown member or passkey, or a passkey of someone else's, is 404 (the same answer
for both, so no passkey id of another member is confirmed); one's own is 409; without
`staff.manage`, 403 and nothing written."""

from __future__ import annotations

import asyncio
import getpass
import os
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice.models import AuditEntry, StaffPasskey, StaffSession, StaffUser
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from tests.auth.helpers import problem
from tests.backoffice.helpers import STAFF_PASSWORD, new_staff, web_sign_in
from tests.backoffice.test_staff_passkeys import passkey_login, signed_in_with_passkey
from tests.test_cli import invoke

API = "/api/v1/admin/staff"


async def give_passkey(
    db: Database, staff_id: uuid.UUID, name: str, *, transports: tuple[str, ...] = ("internal",),
    used: bool = False,
) -> StaffPasskey:  # fmt: skip
    """A stored passkey of `staff_id` (as a registration leaves it; the ceremony itself is
    `test_staff_passkeys`'s)."""

    async def run(s: AsyncSession) -> StaffPasskey:
        now = utcnow()
        passkey = StaffPasskey(
            staff_id=staff_id, credential_id=os.urandom(32), public_key=os.urandom(77),
            transports=list(transports), aaguid=str(uuid.UUID(int=0)), name=name,
            created_at=now, last_used_at=now + timedelta(minutes=1) if used else None,
        )  # fmt: skip
        s.add(passkey)
        await s.flush()
        return passkey

    return await db.run(run)


async def held(db: Database, staff_id: uuid.UUID) -> list[str]:
    async with db.read() as s:
        rows = await s.execute(
            select(StaffPasskey.name).where(StaffPasskey.staff_id == staff_id)
            .order_by(StaffPasskey.name)
        )  # fmt: skip
        return list(rows.scalars())


async def entries(db: Database, *actions: str) -> list[AuditEntry]:
    async with db.read() as s:
        rows = await s.execute(
            select(AuditEntry).where(AuditEntry.action.in_(actions))
            .order_by(AuditEntry.at, AuditEntry.id)
        )
        return list(rows.scalars())


async def open_sessions(db: Database, staff_id: uuid.UUID) -> int:
    async with db.read() as s:
        found = await s.execute(
            select(func.count()).select_from(StaffSession).where(
                StaffSession.staff_id == staff_id, StaffSession.revoked_at.is_(None)
            )
        )
        return int(found.scalar_one())


# --- the API -----------------------------------------------------------------------------------


async def test_the_staff_list_has_the_passkey_count_and_the_time_zone(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    member = await new_staff(db, settings, "agent")
    await give_passkey(db, member.id, "Phone")
    await give_passkey(db, member.id, "Laptop")

    async def zone(s: AsyncSession) -> None:
        row = await s.get(StaffUser, member.id)
        assert row is not None
        row.time_zone = "Asia/Manila"

    await db.run(zone)
    r = await client.get(API, headers=admin.auth)
    assert r.status_code == 200, r.text
    listed = {m["username"]: m for m in r.json()}
    assert (listed[member.username]["passkey_count"], listed[member.username]["time_zone"]) == (
        2, "Asia/Manila"
    )
    assert (listed[admin.username]["passkey_count"], listed[admin.username]["time_zone"]) == (
        0, None
    )
    # the answers of a change and of a reset say it too (a reset removes them: see below)
    r = await client.patch(f"{API}/{member.id}", headers=admin.auth, json={"role": "finance"})
    assert r.status_code == 200 and r.json()["passkey_count"] == 2, r.text
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["StaffOut"]
    assert {"time_zone", "passkey_count"} <= set(schema["required"])


async def test_an_admin_lists_a_members_passkeys_without_their_keys(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    member = await new_staff(db, settings, "agent")
    first = await give_passkey(db, member.id, "Phone", transports=("hybrid", "internal"), used=True)
    second = await give_passkey(db, member.id, "YubiKey", transports=("usb", "nfc"))
    await give_passkey(db, admin.id, "Admin's own")
    r = await client.get(f"{API}/{member.id}/passkeys", headers=admin.auth)
    assert r.status_code == 200, r.text
    assert [sorted(p) for p in r.json()] == [
        ["created_at", "id", "last_used_at", "name", "transports"]
    ] * 2
    assert [(p["id"], p["name"], p["transports"]) for p in r.json()] == [
        (str(first.id), "Phone", ["hybrid", "internal"]),
        (str(second.id), "YubiKey", ["usb", "nfc"]),
    ]
    assert r.json()[0]["last_used_at"] is not None and r.json()[1]["last_used_at"] is None
    assert "public_key" not in r.text and "credential" not in r.text
    # their own list is theirs to read too (removing is another matter)
    r = await client.get(f"{API}/{admin.id}/passkeys", headers=admin.auth)
    assert [p["name"] for p in r.json()] == ["Admin's own"]
    r = await client.get(f"{API}/{uuid.uuid4()}/passkeys", headers=admin.auth)
    assert r.status_code == 404 and problem(r)["type"] == "/problems/staff-member-not-found"
    assert problem(r)["field"] == "staff_id"
    r = await client.get(f"{API}/not-an-id/passkeys", headers=admin.auth)
    assert r.status_code == 422 and problem(r)["type"] == "/problems/validation-error"


async def test_removing_one_passkey_ends_nothing_and_is_audited(
    app: Any, db: Database, settings: Settings
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as member_client,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        member, device, _ = await signed_in_with_passkey(db, settings, member_client)
        kept = await give_passkey(db, member.id, "Spare key")
        [lost] = [p for p in (await _listed(client, db, settings, member.id)) if p != str(kept.id)]
        admin = await new_staff(db, settings, "admin")
        sessions = await open_sessions(db, member.id)
        r = await client.delete(f"{API}/{member.id}/passkeys/{lost}", headers=admin.auth)
        assert r.status_code == 204, r.text
        assert await held(db, member.id) == ["Spare key"]
        [entry] = await entries(db, "staff.passkey_removed")
        assert (entry.actor, entry.target_type, entry.target_id) == (
            f"staff:{admin.username}", "staff", str(member.id)
        )
        assert entry.details == {"passkey_id": lost, "name": "Work laptop"}
        # nothing else ends: the member's sessions, browser and token, go on
        assert await open_sessions(db, member.id) == sessions
        assert (await member_client.get("/backoffice")).status_code == 200
        assert (await client.get("/api/v1/admin/tickets", headers=member.auth)).status_code == 200
        # the removed one signs in no more
        member_client.cookies.clear()
        assert (await passkey_login(member_client, device)).status_code == 401
        # again: it is gone
        r = await client.delete(f"{API}/{member.id}/passkeys/{lost}", headers=admin.auth)
        assert r.status_code == 404 and problem(r)["type"] == "/problems/staff-passkey-not-found"


async def _listed(
    client: httpx.AsyncClient, db: Database, settings: Settings, staff_id: uuid.UUID
) -> list[str]:
    lister = await new_staff(db, settings, "admin")
    r = await client.get(f"{API}/{staff_id}/passkeys", headers=lister.auth)
    assert r.status_code == 200, r.text
    return [p["id"] for p in r.json()]


async def test_removing_one_refusals_change_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    member = await new_staff(db, settings, "agent")
    other = await new_staff(db, settings, "finance")
    mine = await give_passkey(db, member.id, "Phone")
    theirs = await give_passkey(db, other.id, "Theirs")
    own = await give_passkey(db, admin.id, "Own")
    unknown_passkey = await client.delete(
        f"{API}/{member.id}/passkeys/{uuid.uuid4()}", headers=admin.auth
    )
    anothers = await client.delete(f"{API}/{member.id}/passkeys/{theirs.id}", headers=admin.auth)
    # someone else's passkey is answered exactly as an unknown one
    for r in (unknown_passkey, anothers):
        assert r.status_code == 404, r.text
        assert problem(r)["type"] == "/problems/staff-passkey-not-found"
        assert problem(r)["field"] == "passkey_id"
    def said(r: httpx.Response) -> dict[str, Any]:
        return {k: v for k, v in problem(r).items() if k not in ("instance", "request_id")}

    assert said(anothers) == said(unknown_passkey)
    for path, status, slug in (
        (f"{API}/{uuid.uuid4()}/passkeys/{mine.id}", 404, "staff-member-not-found"),
        (f"{API}/{admin.id}/passkeys/{own.id}", 409, "staff-cannot-change-self"),
        (f"{API}/{uuid.uuid4()}/passkeys", 404, "staff-member-not-found"),
        (f"{API}/{admin.id}/passkeys", 409, "staff-cannot-change-self"),
        (f"{API}/{member.id}/passkeys/nope", 422, "validation-error"),
    ):
        r = await client.delete(path, headers=admin.auth)
        assert r.status_code == status, (path, r.text)
        assert problem(r)["type"] == f"/problems/{slug}", (path, r.text)
    for role in ("agent", "finance"):
        someone = await new_staff(db, settings, role)
        for r in (
            await client.get(f"{API}/{member.id}/passkeys", headers=someone.auth),
            await client.delete(f"{API}/{member.id}/passkeys/{mine.id}", headers=someone.auth),
            await client.delete(f"{API}/{member.id}/passkeys", headers=someone.auth),
        ):
            assert r.status_code == 403 and problem(r)["type"] == "/problems/forbidden", r.text
    assert await held(db, member.id) == ["Phone"]
    assert await held(db, other.id) == ["Theirs"] and await held(db, admin.id) == ["Own"]
    assert await entries(db, "staff.passkey_removed", "staff.passkeys_removed") == []
    assert len(await entries(db, "access.denied")) == 6
    assert await open_sessions(db, member.id) == 1


async def test_removing_all_ends_every_session_of_theirs(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    member = await new_staff(db, settings, "agent")
    bystander = await new_staff(db, settings, "agent")
    first = await give_passkey(db, member.id, "Phone")
    second = await give_passkey(db, member.id, "Laptop")
    await give_passkey(db, bystander.id, "Theirs")
    r = await client.delete(f"{API}/{member.id}/passkeys", headers=admin.auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"removed": 2, "sessions_ended": 1}
    assert await held(db, member.id) == [] and await held(db, bystander.id) == ["Theirs"]
    assert await open_sessions(db, member.id) == 0 and await open_sessions(db, bystander.id) == 1
    assert (await client.get("/api/v1/admin/tickets", headers=member.auth)).status_code == 401
    [entry] = await entries(db, "staff.passkeys_removed")
    assert (entry.actor, entry.target_id, entry.before, entry.after) == (
        f"staff:{admin.username}", str(member.id), {"passkeys": 2}, {"passkeys": 0}
    )
    assert sorted(entry.details["passkey_ids"]) == sorted([str(first.id), str(second.id)])
    assert entry.details["sessions_ended"] == 1
    # none left: nothing is removed and no session ends (the page's rule), but it is audited
    r = await client.delete(f"{API}/{bystander.id}/passkeys", headers=admin.auth)
    assert r.json() == {"removed": 1, "sessions_ended": 1}
    fresh = await new_staff(db, settings, "agent")
    r = await client.delete(f"{API}/{fresh.id}/passkeys", headers=admin.auth)
    assert r.status_code == 200 and r.json() == {"removed": 0, "sessions_ended": 0}
    assert await open_sessions(db, fresh.id) == 1
    assert len(await entries(db, "staff.passkeys_removed")) == 3


async def test_an_admins_reset_through_the_api_removes_the_passkeys(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    member = await new_staff(db, settings, "agent")
    await give_passkey(db, member.id, "Phone")
    await give_passkey(db, member.id, "Laptop")
    r = await client.post(f"{API}/{member.id}/password", headers=admin.auth,
                          json={"new_password": "a brand new sentence 42"})
    assert r.status_code == 200, r.text
    assert r.json()["passkey_count"] == 0
    assert await held(db, member.id) == []
    [entry] = await entries(db, "staff.password_reset")
    assert entry.details == {"sessions_ended": 1, "passkeys_removed": 2}
    # a refused reset removes nothing
    await give_passkey(db, member.id, "Phone")
    r = await client.post(f"{API}/{member.id}/password", headers=admin.auth,
                          json={"new_password": "short"})
    assert r.status_code == 422 and problem(r)["field"] == "new_password"
    assert await held(db, member.id) == ["Phone"]
    assert len(await entries(db, "staff.password_reset")) == 1


async def test_the_staff_page_refuses_a_reset_in_place_and_keeps_the_passkeys(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The staff password form comes back through `forms.in_place`: the summary on top with the
    focus, the field marked, no password written back into the page, nothing changed — the
    passkeys neither; a member who is not there is the error page."""
    admin = await new_staff(db, settings, "admin")
    member = await new_staff(db, settings, "agent")
    await give_passkey(db, member.id, "Phone")
    csrf = await web_sign_in(client, admin)
    url = f"/backoffice/staff/{member.id}/password"
    r = await client.post(url, data={"csrf": csrf, "new_password": "a brand new sentence 42",
                                     "confirm_password": "a brand new sentence 43"})
    assert r.status_code == 422
    form = f"p-{member.id}"
    summary = r.text.split('class="flash error error-summary"')[1].split("</div>")[0]
    assert 'role="alert"' in summary and "autofocus" in summary
    assert f'href="#{form}-confirm_password"' in summary
    assert f'id="{form}-confirm_password" name="confirm_password"' in r.text
    assert f'aria-describedby="{form}-confirm_password-error"' in r.text
    assert "a brand new sentence 4" not in r.text
    r = await client.post(url, data={"csrf": csrf, "new_password": STAFF_PASSWORD[:5],
                                     "confirm_password": STAFF_PASSWORD[:5]})
    assert r.status_code == 422 and f'id="{form}-new_password-error"' in r.text
    r = await client.post(f"/backoffice/staff/{admin.id}/password", data={
        "csrf": csrf, "new_password": "a brand new sentence 42",
        "confirm_password": "a brand new sentence 42"})  # fmt: skip
    assert r.status_code == 409 and "Change your own password with your current password." in r.text
    assert 'class="flash error error-summary"' in r.text  # the staff page, not the error page
    r = await client.post(f"/backoffice/staff/{uuid.uuid4()}/password", data={
        "csrf": csrf, "new_password": "a brand new sentence 42",
        "confirm_password": "a brand new sentence 42"})  # fmt: skip
    assert r.status_code == 404 and "Back to the back office" in r.text
    assert await held(db, member.id) == ["Phone"]
    assert await entries(db, "staff.password_reset") == []


# --- the command line ----------------------------------------------------------------------------


def _in(cli_env: str, work: Any) -> Any:
    async def run() -> Any:
        db = Database.from_url(cli_env)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_simcharge_staff_passkeys(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", STAFF_PASSWORD)
    for name, address in (("alice", "Alice@Example.com"), ("bob", "shared@example.com"),
                          ("carol", "shared@example.com")):
        code, out = invoke("staff", "create", name, "--role", "agent", "--email", address)
        assert code == 0, out

    async def seed(db: Database) -> dict[str, uuid.UUID]:
        async with db.transaction() as s:
            staff = {r.username: r for r in (await s.execute(select(StaffUser))).scalars()}
        ids = {}
        for owner, name in (("alice", "Phone"), ("alice", "YubiKey"), ("bob", "Bob's")):
            ids[name] = (await give_passkey(db, staff[owner].id, name, used=name == "Phone")).id
        async with db.transaction() as s:
            for owner in ("alice", "bob"):
                s.add(StaffSession(staff_id=staff[owner].id, token_hash=uuid.uuid4().hex,
                                   mfa=True, expires_at=utcnow() + timedelta(hours=1)))
        return ids

    ids = _in(cli_env, seed)
    bobs = ids["Bob's"]
    code, out = invoke("staff", "passkeys", "list", "alice")
    assert code == 0, out
    header, *rows = out.strip().splitlines()
    assert header.split() == ["ID", "ADDED", "LAST", "USED", "TRANSPORTS", "NAME"]
    assert [r.split()[0] for r in rows] == [str(ids["Phone"]), str(ids["YubiKey"])]
    assert rows[0].split()[-2:] == ["internal", "Phone"] and " never " in rows[1]
    assert rows[1].split()[-2:] == ["internal", "YubiKey"] and " never " not in rows[0]
    # by the e-mail address, any case, when it is one member's
    assert invoke("staff", "passkeys", "list", "alice@example.COM") == (0, out)
    for who in ("shared@example.com", "nobody", "nobody@example.com"):
        code, said = invoke("staff", "passkeys", "list", who)
        assert code == 1 and f"no staff member {who}" in said, said
    code, out = invoke("staff", "passkeys", "list", "carol")
    assert code == 0 and out.strip().splitlines()[1:] == []

    for args, status, said in (
        (["alice"], 2, "give --all or --id ID"),
        (["alice", "--all", "--id", str(ids["Phone"])], 2, "give --all or --id ID"),
        (["alice", "--id", "phone"], 2, "'phone' is not a passkey id"),
        (["alice", "--id", str(bobs)], 1, f"alice has no passkey {bobs}"),
        (["alice", "--id", str(uuid.uuid4())], 1, "alice has no passkey"),
        (["nobody", "--all"], 1, "no staff member nobody"),
    ):
        code, out = invoke("staff", "passkeys", "remove", *args)
        assert (code, said in out) == (status, True), (args, out)

    async def state(db: Database) -> tuple[list[str], dict[str, int], list[AuditEntry]]:
        async with db.read() as s:
            names = list((await s.execute(select(StaffPasskey.name).order_by(StaffPasskey.name)))
                         .scalars())
            open_ = await s.execute(
                select(StaffUser.username, func.count(StaffSession.id))
                .join(StaffSession, StaffSession.staff_id == StaffUser.id)
                .where(StaffSession.revoked_at.is_(None)).group_by(StaffUser.username)
            )
            audit = await s.execute(select(AuditEntry).where(
                AuditEntry.action.in_(["staff.passkey_removed", "staff.passkeys_removed"])
            ).order_by(AuditEntry.at))
            return names, {k: int(v) for k, v in open_}, list(audit.scalars())

    assert _in(cli_env, state) == (["Bob's", "Phone", "YubiKey"], {"alice": 1, "bob": 1}, [])
    code, out = invoke("staff", "passkeys", "remove", "alice", "--id", f" {ids['YubiKey']} ")
    assert code == 0 and out.strip() == f"passkey {ids['YubiKey']} (YubiKey) removed"
    names, sessions, audit = _in(cli_env, state)
    assert (names, sessions) == (["Bob's", "Phone"], {"alice": 1, "bob": 1})
    code, out = invoke("staff", "passkeys", "remove", "Alice@example.com", "--all")
    assert code == 0 and out.strip() == "1 passkey(s) removed; 1 session(s) ended"
    names, sessions, audit = _in(cli_env, state)
    assert (names, sessions) == (["Bob's"], {"bob": 1})
    one, every = audit
    actor = f"cli:{getpass.getuser()}"
    assert (one.action, one.actor, one.details) == (
        "staff.passkey_removed", actor, {"passkey_id": str(ids["YubiKey"]), "name": "YubiKey"}
    )
    assert (every.action, every.actor, every.before, every.after) == (
        "staff.passkeys_removed", actor, {"passkeys": 1}, {"passkeys": 0}
    )
    assert every.user_agent and every.user_agent.startswith("simcharge staff passkeys remove on ")

    # `simcharge staff password` starts over too: bob's passkey goes with his sessions
    code, out = invoke("staff", "password", "bob")
    assert code == 0 and "1 session(s) ended, 1 passkey(s) removed" in out, out
    assert _in(cli_env, state)[:2] == ([], {})
