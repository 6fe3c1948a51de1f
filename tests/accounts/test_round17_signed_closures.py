"""Round 17 (H6): `simcharge privacy reapply-closures --log FILE` erased every account an
`account.closed` line named: whoever could write a line into the log could have an account
erased. Now each closure's line carries `closed_at` and a `mac` (HMAC-SHA256 of the account id
and `closed_at` under a key derived from SIMCHARGE_SECRET_KEY); only lines whose MAC verifies
under the key ring are applied. The others are listed and passed over (exit 1), unless the
operator says `--accept-unsigned` (logs written before the signing). Every test runs on SQLite
and PostgreSQL."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from simcharge import cli
from simcharge.accounts import closures
from simcharge.accounts.models import Account
from simcharge.accounts.privacy import erase_account
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings, get_settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from tests.factories import create_account

runner = CliRunner()
CLOSED_AT = "2026-12-10T07:59:59.123456+00:00"
OTHER_KEY = "another-secret-key-of-round-seventeen-0123456789"


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The privacy logger writing JSON lines as production does (`kit.logging`, json=True)."""
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(file=out),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
    )
    monkeypatch.setattr(closures, "log", logger)
    return out


def _line(account_id: Any, *, key: str | None = None, closed_at: str = CLOSED_AT,
          mac_for: Any = None, **extra: Any) -> str:  # fmt: skip
    """An `account.closed` line; `key`: signed with it (`mac_for`: for another account)."""
    record: dict[str, Any] = {"event": "account.closed", "account_id": str(account_id),
                              "level": "info", "timestamp": "2026-12-10T08:00:00Z"}
    if key is not None:
        signed_id = uuid.UUID(str(mac_for or account_id))
        record |= {"closed_at": closed_at, "mac": closures.closure_mac(key, signed_id, CLOSED_AT)}
    return json.dumps(record | extra) + "\n"


def _open_accounts(n: int) -> list[uuid.UUID]:
    async def run(db: Database) -> list[uuid.UUID]:
        async def make(s: AsyncSession) -> list[uuid.UUID]:
            return [(await create_account(s, display_name="Ana Cruz")).id for _ in range(n)]

        return await db.run(make)

    return cli._run(run)


def _statuses(*ids: uuid.UUID) -> list[str]:
    async def run(db: Database) -> list[str]:
        async with db.read() as s:
            found = {a.id: a.status for a in (await s.execute(
                select(Account).where(Account.id.in_(ids)))).scalars()}  # fmt: skip
            return [found[i] for i in ids]

    return cli._run(run)


def _audit_details(account_id: uuid.UUID) -> dict[str, Any]:
    async def run(db: Database) -> dict[str, Any]:
        async with db.read() as s:
            entry = (await s.execute(select(AuditEntry).where(
                AuditEntry.action == "account.closure_reapplied",
                AuditEntry.target_id == str(account_id)))).scalar_one()  # fmt: skip
            return dict(entry.details)

    return cli._run(run)


async def test_a_closure_logs_a_line_its_key_signs(
    db: Database, settings: Settings, shipped: io.StringIO
) -> None:
    account = await db.run(lambda s: create_account(s))

    async def close(s: AsyncSession) -> None:
        row = await s.get(Account, account.id)
        assert row is not None
        await erase_account(s, settings, row, utcnow())

    await db.run(close)
    [line] = shipped.getvalue().splitlines()
    record = json.loads(line)
    assert record["account_id"] == str(account.id) and record["closed_at"]
    assert record["mac"] == closures.closure_mac(
        settings.secret_key, account.id, record["closed_at"]
    )
    found = closures.logged_closures([line], settings.secret_keys)
    assert found.signed == {account.id} and found.unsigned == []
    # Under another key, or none, the same line does not verify.
    assert closures.logged_closures([line], OTHER_KEY).unsigned == [1]
    assert closures.logged_closures([line]).signed == set()


async def test_a_closure_made_elsewhere_is_logged_unsigned(
    db: Database, shipped: io.StringIO
) -> None:
    """A status set to `closed` without `erase_account` is still in the record, unsigned."""
    account = await db.run(lambda s: create_account(s))

    async def close(s: AsyncSession) -> None:
        row = await s.get(Account, account.id)
        assert row is not None
        row.status = "closed"

    await db.run(close)
    [line] = shipped.getvalue().splitlines()
    assert "mac" not in json.loads(line) and json.loads(line)["closed_at"]


def test_only_signed_lines_are_applied(cli_env: str, tmp_path: Path) -> None:
    signed, unsigned, wrong_key, moved, retimed = _open_accounts(5)
    key = get_settings().secret_key
    log = tmp_path / "shipped.log"
    log.write_text(
        _line(signed, key=key)
        + _line(unsigned)
        + _line(wrong_key, key=OTHER_KEY)
        + _line(moved, key=key, mac_for=signed)  # a signed line's MAC on another account
        + _line(retimed, key=key, closed_at="2026-12-11T00:00:00+00:00"),
        encoding="utf-8",
    )
    result = runner.invoke(cli.app, ["privacy", "reapply-closures", "--log", str(log),
                                     "--dry-run"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"{signed}  would close again" in result.stdout
    assert _statuses(signed) == ["active"]

    result = runner.invoke(cli.app, ["privacy", "reapply-closures", "--log", str(log)])
    assert result.exit_code == 1, result.output
    for passed_over in (unsigned, wrong_key, moved, retimed):
        assert f"{passed_over}  passed over: no line of it carries a valid signature" \
            in result.stdout
    assert "5 closure(s) logged: closed again 1, closed already 0, not in the database 0, " \
        "unsigned (passed over) 4" in result.stdout
    assert "line(s) 2, 3, 4, 5 carry no valid signature: passed over" in result.stderr
    assert "--accept-unsigned" in result.stderr
    assert _statuses(signed, unsigned, wrong_key, moved, retimed) == [
        "closed", "active", "active", "active", "active"
    ]
    assert _audit_details(signed)["signed"] is True


def test_accept_unsigned_applies_them_and_says_so(cli_env: str, tmp_path: Path) -> None:
    signed, unsigned = _open_accounts(2)
    log = tmp_path / "old.log"
    log.write_text(_line(signed, key=get_settings().secret_key) + _line(unsigned),
                   encoding="utf-8")
    result = runner.invoke(cli.app, ["privacy", "reapply-closures", "--log", str(log),
                                     "--accept-unsigned"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "closed again 2" in result.stdout and "unsigned (passed over)" not in result.stdout
    assert "line(s) 2 carry no valid signature: applied all the same" in result.stderr
    assert _statuses(signed, unsigned) == ["closed", "closed"]
    assert _audit_details(unsigned)["signed"] is False
    assert _audit_details(signed)["signed"] is True


def test_a_forged_line_beside_a_signed_one_does_not_set_the_time(
    cli_env: str, tmp_path: Path
) -> None:
    """The audit's `logged_at` is the time the signed line signs, not a forged line's before it."""
    [account] = _open_accounts(1)
    forged = _line(account, timestamp="1999-01-01T00:00:00Z")
    log = tmp_path / "shipped.log"
    log.write_text(forged + _line(account, key=get_settings().secret_key), encoding="utf-8")
    result = runner.invoke(cli.app, ["privacy", "reapply-closures", "--log", str(log)])
    assert result.exit_code == 0, result.output
    assert "line(s) 1 carry no valid signature: passed over" in result.stderr
    assert _audit_details(account)["logged_at"] == CLOSED_AT  # the signed time, not the line's own


def test_a_line_signed_before_a_key_rotation_still_verifies(
    cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [account] = _open_accounts(1)
    log = tmp_path / "shipped.log"
    log.write_text(_line(account, key=OTHER_KEY), encoding="utf-8")
    monkeypatch.setenv("SIMCHARGE_SECRET_KEY", "the-key-after-the-rotation-000000000000001")
    monkeypatch.setenv("SIMCHARGE_SECRET_KEY_PREVIOUS", OTHER_KEY)
    get_settings.cache_clear()
    result = runner.invoke(cli.app, ["privacy", "reapply-closures", "--log", str(log)])
    assert result.exit_code == 0, result.output
    assert _statuses(account) == ["closed"]


@pytest.mark.parametrize(
    "damage",
    [{"mac": 12}, {"mac": None}, {"closed_at": 5}, {"mac": "00" * 32}, {"mac": ""}],
)
def test_a_damaged_signature_is_passed_over(damage: dict[str, Any]) -> None:
    account = uuid.uuid4()
    line = json.loads(_line(account, key=OTHER_KEY)) | damage
    found = closures.logged_closures([json.dumps(line)], OTHER_KEY)
    assert found.signed == set() and found.unsigned == [1]
    assert found.unsigned_closures() == [account]
