"""`simcharge staff create`."""

from __future__ import annotations

import asyncio
import getpass

import pytest
from sqlalchemy import select

from simcharge.backoffice.models import AuditEntry, StaffUser
from simcharge.db import Database
from tests.backoffice.helpers import STAFF_PASSWORD
from tests.test_cli import invoke


def test_staff_create(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", STAFF_PASSWORD)
    code, out = invoke("staff", "create", "alice", "--role", "finance", "--name", "Alice W")
    assert code == 0 and "created finance alice" in out
    code, out = invoke("staff", "create", "alice", "--role", "finance")
    assert code == 2 and "already exists" in out
    code, out = invoke("staff", "create", "bob", "--role", "boss")
    assert code == 2 and "role" in out
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", "short")
    code, out = invoke("staff", "create", "carol", "--role", "agent")
    assert code == 2 and "password" in out
    # the creation is in the audit log (who ran the command, on which host); the refusals
    # created nobody and left no entry
    async def read() -> tuple[list[StaffUser], list[AuditEntry]]:
        db = Database.from_url(cli_env)
        try:
            async with db.read() as s:
                return (
                    list((await s.execute(select(StaffUser))).scalars()),
                    list((await s.execute(select(AuditEntry))).scalars()),
                )
        finally:
            await db.dispose()

    staff, entries = asyncio.run(read())
    assert [st.username for st in staff] == ["alice"]
    [entry] = entries
    assert (entry.action, entry.target_type, entry.target_id) == (
        "staff.create", "staff", str(staff[0].id)
    )
    assert entry.actor == f"cli:{getpass.getuser()}"
    assert entry.user_agent and entry.user_agent.startswith("simcharge staff create on ")
    assert entry.after == {
        "username": "alice", "role": "finance", "active": True, "totp": False,
        "locked_until": None,
    }
    assert "password" not in str(entry.after) and STAFF_PASSWORD not in str(entry.after)


def test_staff_create_for_a_colleague_marks_the_password(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--must-change`: the password is the creator's choice, so its holder must replace it at
    the first sign-in (it expires as an admin's reset does); without it, as for the operator's
    own first account, it is the member's own."""
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", STAFF_PASSWORD)
    assert invoke("staff", "create", "dora", "--role", "agent", "--must-change")[0] == 0
    assert invoke("staff", "create", "erin", "--role", "admin")[0] == 0

    async def marks() -> dict[str, bool]:
        db = Database.from_url(cli_env)
        try:
            async with db.read() as s:
                rows = (await s.execute(select(StaffUser))).scalars()
                return {r.username: r.password_set_by_other_at is not None for r in rows}
        finally:
            await db.dispose()

    assert asyncio.run(marks()) == {"dora": True, "erin": False}
