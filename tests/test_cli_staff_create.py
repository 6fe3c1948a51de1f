"""`simcharge staff create` never takes the password on the command line (fourteenth round).

`--password VALUE` put the password in `ps` and the shell history. It is refused now (exit 2,
nothing created, the value never echoed); the password is typed at the prompt (twice, hidden)
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

PASSWORD = "a-long-and-unusual-passphrase-9173"


def _rows(url: str) -> tuple[list[StaffUser], list[AuditEntry]]:
    async def read() -> tuple[list[StaffUser], list[AuditEntry]]:
        db = Database.from_url(url)
        try:
            async with db.read() as s:
                return (list((await s.execute(select(StaffUser))).scalars()),
                        list((await s.execute(select(AuditEntry))).scalars()))
        finally:
            await db.dispose()

    return asyncio.run(read())


def test_a_password_on_the_command_line_is_refused(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIMCHARGE_STAFF_PASSWORD", raising=False)
    runner = CliRunner()
    for args in (["--password", PASSWORD], [f"--password={PASSWORD}"], ["--password", ""]):
        r = runner.invoke(app, ["staff", "create", "alice", "--role", "admin", *args],
                          input=f"{PASSWORD}\n{PASSWORD}\n")
        assert r.exit_code == 2, r.output
        assert "--password is refused" in r.output and "SIMCHARGE_STAFF_PASSWORD" in r.output
        assert PASSWORD not in r.output
    # With the environment variable set too: still refused.
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", PASSWORD)
    r = runner.invoke(app, ["staff", "create", "alice", "--role", "admin", "--password", "x"])
    assert r.exit_code == 2 and "--password is refused" in r.output
    assert _rows(cli_env) == ([], [])
    # Not offered in the help either.
    r = runner.invoke(app, ["staff", "create", "--help"])
    assert r.exit_code == 0 and "--password" not in r.output
    assert "SIMCHARGE_STAFF_PASSWORD" in r.output


def test_the_prompt_asks_twice_and_hides_the_password(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIMCHARGE_STAFF_PASSWORD", raising=False)
    runner = CliRunner()
    # Two different entries: asked again; then the same twice.
    r = runner.invoke(app, ["staff", "create", "bob", "--role", "agent"],
                      input=f"{PASSWORD}\nsomething-else-entirely\n{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    assert "Password:" in r.output and "Repeat for confirmation:" in r.output
    assert "do not match" in r.output.lower()
    assert PASSWORD not in r.output
    [bob], [entry] = _rows(cli_env)
    assert bob.username == "bob" and verify_password(bob.password_hash, PASSWORD)
    assert entry.action == "staff.create" and PASSWORD not in str(entry.after)


def test_the_environment_variable_is_read_without_a_prompt(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", PASSWORD)
    r = CliRunner().invoke(app, ["staff", "create", "carol", "--role", "finance"], input="")
    assert r.exit_code == 0 and "Password:" not in r.output, r.output
    [carol], _ = _rows(cli_env)
    assert verify_password(carol.password_hash, PASSWORD)
    # A weak one from the environment is refused as before, nothing created.
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", "short")
    r = CliRunner().invoke(app, ["staff", "create", "dan", "--role", "finance"])
    assert r.exit_code == 2 and "password" in r.output
    assert [s.username for s in _rows(cli_env)[0]] == ["carol"]
