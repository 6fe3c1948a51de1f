"""`simcharge staff password` never takes the password on the command line (as `staff create`).

`--password VALUE` put the new password in `ps` and the shell history. It is refused (exit 2,
nothing changed, the value never echoed); the password is typed at the prompt (twice, hidden)
or read from `SIMCHARGE_STAFF_PASSWORD`.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from simcharge.auth.passwords import verify_password
from simcharge.backoffice.models import AuditEntry, StaffUser
from simcharge.cli import app
from simcharge.db import Database

FIRST = "a-long-and-unusual-passphrase-9173"
NEW = "another-quite-unusual-passphrase-4821"


def _state(url: str) -> tuple[str, list[str]]:
    """alice's password hash, and the audit log's actions."""
    async def read() -> tuple[str, list[str]]:
        db = Database.from_url(url)
        try:
            async with db.read() as s:
                staff = (await s.execute(
                    select(StaffUser).where(StaffUser.username == "alice"))).scalar_one()
                actions = (await s.execute(select(AuditEntry.action))).scalars()
                return staff.password_hash, sorted(actions)
        finally:
            await db.dispose()

    return asyncio.run(read())


@pytest.fixture
def alice(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", FIRST)
    r = CliRunner().invoke(app, ["staff", "create", "alice", "--role", "admin"])
    assert r.exit_code == 0, r.output
    monkeypatch.delenv("SIMCHARGE_STAFF_PASSWORD")
    return cli_env


def test_a_password_on_the_command_line_is_refused(
    alice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _state(alice)
    runner = CliRunner()
    for args in (["--password", NEW], [f"--password={NEW}"], ["--password", ""]):
        r = runner.invoke(app, ["staff", "password", "alice", *args], input=f"{NEW}\n{NEW}\n")
        assert r.exit_code == 2, r.output
        assert "--password is refused" in r.output and "SIMCHARGE_STAFF_PASSWORD" in r.output
        assert NEW not in r.output and "New password" not in r.output  # refused before asking
    # With the environment variable set too: still refused.
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", NEW)
    r = runner.invoke(app, ["staff", "password", "alice", "--password", "x"])
    assert r.exit_code == 2 and "--password is refused" in r.output
    # An unknown member with it: the refusal, not "no staff member".
    r = runner.invoke(app, ["staff", "password", "nobody", "--password", NEW])
    assert r.exit_code == 2 and "--password is refused" in r.output and NEW not in r.output
    # Nothing changed: the same hash (the first password signs in), no audit entry.
    assert _state(alice) == before
    assert verify_password(before[0], FIRST) and before[1] == ["staff.create"]
    # Not offered in the help either; the ways that are, are named.
    r = runner.invoke(app, ["staff", "password", "--help"])
    assert r.exit_code == 0 and "--password" not in r.output
    assert "SIMCHARGE_STAFF_PASSWORD" in r.output


def test_the_prompt_asks_twice_and_hides_the_password(alice: str) -> None:
    # Two different entries: asked again; then the same twice.
    r = CliRunner().invoke(app, ["staff", "password", "alice"],
                           input=f"{NEW}\nsomething-else-entirely\n{NEW}\n{NEW}\n")
    assert r.exit_code == 0, r.output
    assert "New password:" in r.output and "Repeat for confirmation:" in r.output
    assert "do not match" in r.output.lower()
    assert NEW not in r.output and "password set; 0 session(s) ended" in r.output
    password_hash, actions = _state(alice)
    assert verify_password(password_hash, NEW) and not verify_password(password_hash, FIRST)
    assert actions == ["staff.create", "staff.password_reset"]


def test_no_input_at_the_prompt_changes_nothing(alice: str) -> None:
    before = _state(alice)
    r = CliRunner().invoke(app, ["staff", "password", "alice"], input="")
    assert r.exit_code != 0 and "password set" not in r.output
    assert _state(alice) == before


def test_the_environment_variable_is_read_without_a_prompt(
    alice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", NEW)
    r = CliRunner().invoke(app, ["staff", "password", "alice"], input="")
    assert r.exit_code == 0 and "New password" not in r.output, r.output
    assert NEW not in r.output
    password_hash, _ = _state(alice)
    assert verify_password(password_hash, NEW)
    # A weak one from the environment is refused by the policy, nothing changed.
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", "short")
    r = CliRunner().invoke(app, ["staff", "password", "alice"])
    assert r.exit_code == 2 and "new_password" in r.output
    assert _state(alice)[0] == password_hash
    # An empty one is no password: asked for instead.
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", "")
    r = CliRunner().invoke(app, ["staff", "password", "alice"], input=f"{FIRST}\n{FIRST}\n")
    assert r.exit_code == 0 and "New password:" in r.output, r.output
    assert verify_password(_state(alice)[0], FIRST)
