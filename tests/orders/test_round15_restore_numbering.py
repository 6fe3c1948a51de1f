"""After restoring a backup, receipt and credit-note numbers go on past those already issued
(round 15).

What was wrong: `receipt_counters` went back with the dump. Three sales, a backup, three more
(`R<year>-000004` … `06` e-mailed to their payers), a restore: the next sale was given
`R<year>-000004` again — the number of another sale, a tax error (receipt numbers must be unique
and sequential). Now `simcharge receipts status` says where each series stands, and
`simcharge receipts continue --series receipt|credit-note --after NUMBER` moves a series past
the numbers issued after the backup: refused when it would go back or below a number the
database holds (exit 2, nothing changed), audited (`receipts.continue`).

A real backup and restore: `pg_dump -Fc` / `pg_restore` on PostgreSQL, SQLite's backup API on
SQLite; real sales through the sandbox, numbered as the worker numbers them.
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from simcharge.app import create_app
from simcharge.backoffice.models import AuditEntry
from simcharge.cli import app as command
from simcharge.config import get_settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.models import ReceiptCounter
from simcharge.orders.numbering import CREDIT_NOTES, RECEIPTS, SeriesRefused, parse_after
from simcharge.orders.service import issue_credit_note, issue_receipt_number
from tests.conftest import Backend, _pg_create, _pg_url
from tests.factories import load_demo_catalog
from tests.orders.helpers import assert_ledger_balanced, new_payer
from tests.orders.test_credit_notes_round9b import _credited, _done_refund

YEAR = utcnow().year


def R(n: int) -> str:
    return f"R{YEAR}-{n:06d}"


def C(n: int) -> str:
    return f"C{YEAR}-{n:06d}"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(command, list(args))
    return result.exit_code, result.output


def _use(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command (and `get_settings`) on the database at `url`."""
    monkeypatch.setenv("SIMCHARGE_DATABASE_URL", url)
    get_settings.cache_clear()


async def _sell(url: str, sales: int, refunds: int = 0, *, catalog: bool = False) -> list[str]:
    """`sales` credited orders, their receipts numbered as the worker numbers them, then
    `refunds` done refunds of the first ones with their credit notes: the numbers given."""
    db = Database.from_url(url)
    try:
        if catalog:
            await db.run(load_demo_catalog)
        settings = get_settings()
        app = create_app(settings, db=db, run_worker=False)
        numbers: list[str] = []
        orders: list[uuid.UUID] = []
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            payer = await new_payer(db, settings)
            for _ in range(sales):
                order_id = await _credited(client, settings, payer)
                orders.append(order_id)
                number = await db.run(lambda s, o=order_id: issue_receipt_number(s, o))
                assert number is not None
                numbers.append(number)
        for i in range(refunds):
            refund = await _done_refund(db, orders[i], 500, f"r15-{uuid.uuid4().hex[:8]}")
            note = await db.run(lambda s, r=refund.id: issue_credit_note(s, r, utcnow()))
            assert note is not None
            numbers.append(note)
        await assert_ledger_balanced(db)
        return numbers
    finally:
        await db.dispose()


async def _audits(url: str) -> list[AuditEntry]:
    db = Database.from_url(url)
    try:
        async with db.read() as s:
            return list(
                (
                    await s.execute(
                        select(AuditEntry).where(AuditEntry.action == "receipts.continue")
                    )
                ).scalars()
            )
    finally:
        await db.dispose()


async def _counters(url: str) -> dict[str, int]:
    db = Database.from_url(url)
    try:
        async with db.read() as s:
            rows = (await s.execute(select(ReceiptCounter.name, ReceiptCounter.value))).all()
            return {r[0]: r[1] for r in rows}
    finally:
        await db.dispose()


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def backups(backend: Backend, tmp_path: Path) -> Iterator[tuple[Callable[[str], Path],
                                                              Callable[[Path, str], str]]]:
    """`backup(url) -> file` and `restore(file, label) -> url`, as the operator does them; the
    restored databases are dropped afterwards."""
    made: list[str] = []

    def backup(url: str) -> Path:
        path = tmp_path / "backup.dump"
        if backend.is_postgres:
            subprocess.run([_tool("pg_dump"), "-Fc", "-f", str(path), _libpq(url)], check=True)
        else:
            with sqlite3.connect(str(make_url(url).database)) as live, \
                    sqlite3.connect(path) as copy:  # fmt: skip
                live.backup(copy)
        return path

    def restore(path: Path, label: str) -> str:
        if backend.is_postgres:
            name = f"simcharge_{label}_{backend.worker}"
            asyncio.run(_pg_create(name))
            url = _pg_url(name)
            subprocess.run(
                [_tool("pg_restore"), "--no-owner", "--exit-on-error", "-d", _libpq(url), str(path)],
                check=True,
            )
        else:
            target = backend.tmp / f"{label}-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(path, target)
            url = f"sqlite+aiosqlite:///{target}"
        made.append(url)
        return url

    yield backup, restore
    get_settings.cache_clear()
    for url in made:
        asyncio.run(backend.discard(url))


def test_after_a_restore_the_series_continue_past_the_numbers_issued_after_the_backup(
    cli_env: str,
    backups: tuple[Callable[[str], Path], Callable[[Path, str], str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backup, restore = backups
    assert asyncio.run(_sell(cli_env, 3, refunds=1, catalog=True)) == [R(1), R(2), R(3), C(1)]
    dump = backup(cli_env)
    # After the backup: three more receipts and a credit note, e-mailed to their payers.
    assert asyncio.run(_sell(cli_env, 3, refunds=1)) == [R(4), R(5), R(6), C(2)]

    # What went wrong: restored and started as is, the next sale gets a number already issued.
    as_is = restore(dump, "restoredasis")
    _use(as_is, monkeypatch)
    assert asyncio.run(_sell(as_is, 1, refunds=1)) == [R(4), C(2)]  # both issued before

    # The procedure: see where the series stand, continue each, then sell.
    restored = restore(dump, "restored")
    _use(restored, monkeypatch)
    code, out = invoke("receipts", "status")
    assert code == 0, out
    assert f"receipt     {YEAR}  {R(3)}    {R(3)}" in out, out
    assert f"credit-note {YEAR}  {C(1)}    {C(1)}" in out, out

    code, out = invoke("receipts", "continue", "--series", "receipt", "--after", R(6))
    assert code == 0, out
    assert f"the receipt series of {YEAR} continues after {R(6)} (it was at {R(3)}); " \
        f"the next is {R(7)}" in out, out
    code, out = invoke("receipts", "continue", "--series", "credit-note", "--after", "2")
    assert code == 0, out
    assert f"continues after {C(2)} (it was at {C(1)}); the next is {C(3)}" in out, out

    code, out = invoke("receipts", "status")
    assert f"receipt     {YEAR}  {R(6)}    {R(3)}" in out, out  # 4–6: in the e-mails only
    assert asyncio.run(_sell(restored, 1, refunds=1)) == [R(7), C(3)]
    code, out = invoke("receipts", "status")
    assert f"receipt     {YEAR}  {R(7)}    {R(7)}" in out, out
    assert f"credit-note {YEAR}  {C(3)}    {C(3)}" in out, out

    # Audited as the OS user, with the numbers before and after.
    entries = sorted(asyncio.run(_audits(restored)), key=lambda e: e.target_id or "")
    assert [(e.target_id, e.before, e.after) for e in entries] == [
        (f"credit_note:{YEAR}", {"last_number": C(1)}, {"last_number": C(2)}),
        (f"receipt:{YEAR}", {"last_number": R(3)}, {"last_number": R(6)}),
    ]
    assert all(e.actor == f"cli:{getpass.getuser()}" for e in entries)
    assert entries[1].details["skipped"] == 3 and entries[1].details["series"] == "receipt"
    assert entries[1].user_agent and entries[1].user_agent.startswith(
        "simcharge receipts continue on ")

    # Run again with the same number: nothing to do, nothing audited.
    code, out = invoke("receipts", "continue", "--series", "receipt", "--after", R(6))
    assert code == 2 and f"is at {R(7)} already; it never goes back" in out, out
    code, out = invoke("receipts", "continue", "--series", "receipt", "--after", R(7))
    assert code == 0 and f"is at {R(7)} already; nothing changed; the next is {R(8)}" in out
    assert len(asyncio.run(_audits(restored))) == 2


def test_continue_refuses_bad_input_and_going_back_and_changes_nothing(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = invoke("receipts", "status")
    assert code == 0 and "no receipt or credit note issued yet" in out, out
    asyncio.run(_sell(cli_env, 3, catalog=True))
    before = asyncio.run(_counters(cli_env))
    assert before == {f"receipt:{YEAR}": 3}

    refused = [
        (["--series", "invoice", "--after", "6"], "--series must be one of: receipt, credit-note"),
        (["--series", "receipt", "--after", "six"], "--after takes a receipt number as printed"),
        (["--series", "receipt", "--after", "R2026-00000x"], "--after takes"),
        (["--series", "receipt", "--after", "٣"], "--after takes"),  # a digit, not ASCII
        (["--series", "receipt", "--after", C(6)], "is not a number of the receipt series"),
        (["--series", "credit-note", "--after", R(6)], "is not a number of the credit-note"),
        (["--series", "receipt", "--after", R(6), "--year", str(YEAR - 1)],
         f"--year {YEAR - 1} contradicts {R(6)}"),
        (["--series", "receipt", "--after", "0"], "--after must be between 1 and 999999"),
        (["--series", "receipt", "--after", "1000000"], "between 1 and 999999"),
        (["--series", "receipt", "--after", "6", "--year", "1999"], "--year must be between"),
        (["--series", "receipt", "--after", "2"],
         f"the receipt series of {YEAR} is at {R(3)} already; it never goes back"),
    ]
    for args, said in refused:
        code, out = invoke("receipts", "continue", *args)
        assert code == 2, (args, out)
        assert said in out, (args, out)
    # Missing options: typer's usage error, exit 2.
    assert invoke("receipts", "continue", "--series", "receipt")[0] == 2
    assert invoke("receipts", "continue", "--after", "6")[0] == 2
    assert asyncio.run(_counters(cli_env)) == before
    assert asyncio.run(_audits(cli_env)) == []

    # A counter behind the numbers the database holds (a restore of the counters alone, a
    # hand edit): continuing below the highest one held is refused, at it is taken.
    async def lower() -> None:
        db = Database.from_url(cli_env)
        try:
            await db.run(lambda s: s.execute(update(ReceiptCounter).values(value=1)))
        finally:
            await db.dispose()

    asyncio.run(lower())
    code, out = invoke("receipts", "continue", "--series", "receipt", "--after", "2")
    assert code == 2 and f"{R(3)} is already used in the database" in out, out
    assert "nothing changed" in out
    code, out = invoke("receipts", "continue", "--series", "receipt", "--after", "3")
    assert code == 0 and f"continues after {R(3)} (it was at {R(1)})" in out, out

    # A plain number in another year's series, one never used: the series starts there.
    code, out = invoke(
        "receipts", "continue", "--series", "credit-note", "--after", "12", "--year",
        str(YEAR - 1),
    )  # fmt: skip
    assert code == 0, out
    assert f"continues after C{YEAR - 1}-000012 (it was at none issued); the next is " \
        f"C{YEAR - 1}-000013" in out, out
    code, out = invoke("receipts", "status")
    assert f"credit-note {YEAR - 1}  C{YEAR - 1}-000012    none" in out, out
    assert asyncio.run(_counters(cli_env)) == {
        f"receipt:{YEAR}": 3, f"credit_note:{YEAR - 1}": 12}
    assert len(asyncio.run(_audits(cli_env))) == 2


def test_numbers_are_read_as_printed_or_plain() -> None:
    assert parse_after(RECEIPTS, " R2026-000006 ", None, 2027) == (2026, 6)
    assert parse_after(RECEIPTS, "r2026-6", None, 2027) == (2026, 6)
    assert parse_after(CREDIT_NOTES, "C2025-000123", 2025, 2027) == (2025, 123)
    assert parse_after(RECEIPTS, "6", None, 2027) == (2027, 6)
    assert parse_after(RECEIPTS, "000006", 2026, 2027) == (2026, 6)
    for text in ("", "-6", "6.0", "R2026", "R26-000006", "X2026-000006", "R2026-000006x"):
        with pytest.raises(SeriesRefused) as refused:
            parse_after(RECEIPTS, text, None, 2027)
        assert refused.value.field == "--after", text
