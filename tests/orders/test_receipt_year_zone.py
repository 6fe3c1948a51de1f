"""Receipt and credit-note numbers take the operator's year, not UTC's.

What was wrong: `R<year>-<6 digits>` and `C<year>-…` took the UTC year of the payment (of the
refund's completion), while the document prints its date in the operator's time zone
(`SIMCHARGE_OPERATOR_TIMEZONE`). An operator in Manila (UTC+8) paid on 1 January between 00:00
and 08:00 local issued `R2026-…` on a receipt dated "Jan 1, 2027": the number of the closed
year, on a document of the new one. Now the year is the operator's (`numbering.year_of`, the
zone the date is printed in) on every path that numbers — the worker's receipt job, the payer
asking for the receipt, our refund completed by the worker, a refund made at the provider
reported by webhook, the backfill — and `simcharge receipts status|continue` take the
operator's year as "this year". Real database (SQLite and PostgreSQL), the sandbox provider,
the worker, the PDF as rendered; the clock frozen at 16:30 UTC on 31 December 2026 (00:30 on
1 January 2027 in Manila)."""

from __future__ import annotations

import ast
import asyncio
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from pypdf import PdfReader
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from simcharge.app import create_app
from simcharge.auth.client import ClientInfo
from simcharge.auth.service import policy
from simcharge.auth.sessions import open_session
from simcharge.backoffice.audit import command_line_actor
from simcharge.cli import app as command
from simcharge.config import Settings, get_settings
from simcharge.db import Database
from simcharge.kit.clock import clock
from simcharge.orders.models import ReceiptCounter, Refund
from simcharge.orders.numbering import year_of
from simcharge.orders.service import backfill_credit_notes
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
    sandbox_object,
    signed_event,
)
from tests.orders.test_credit_notes import _refund, _refunds, _staff

NEW_YEAR_IN_MANILA = datetime(2026, 12, 31, 16, 30, tzinfo=UTC)
"""00:30 on 1 January 2027 in Manila (UTC+8); still 31 December 2026 in UTC."""
EARLIER_THAT_DAY = datetime(2026, 12, 31, 9, 0, tzinfo=UTC)
"""17:00 on 31 December 2026 in Manila too."""
JSON = {"Accept": "application/json"}

ZONES = [
    pytest.param("Asia/Manila", 2027, "Jan 1, 2027, 12:30:00\u202fAM", id="manila"),
    pytest.param("UTC", 2026, "Dec 31, 2026, 4:30:00\u202fPM", id="utc"),
]


def _text(pdf: bytes) -> str:
    """The text of the PDF (fpdf2's two-byte codes read a byte at a time: NULs dropped)."""
    pages = PdfReader(io.BytesIO(pdf)).pages
    return "\n".join(page.extract_text() for page in pages).replace("\x00", "")


def _in(settings: Settings, zone: str) -> Settings:
    return settings.model_copy(update={"operator_timezone": zone})


async def _payer_at(db: Database, settings: Settings, at: datetime) -> Payer:
    """A payer signed in at `at` (the clock frozen there)."""
    clock.freeze(at)
    return await new_payer(db, settings)


async def _signed_in_again(db: Database, settings: Settings, payer: Payer) -> Payer:
    """The payer signs in again, now (hours later their first session has ended)."""
    issued = await db.run(lambda s: open_session(
        s, settings.secret_key, account_id=payer.account_id,
        client=ClientInfo(ip="198.51.100.7", user_agent="pytest"),
        policy=policy(settings), now=clock.now(),
    ))
    return Payer(payer.account_id, issued.token, payer.line, payer.email)


async def _credited_at(
    client: httpx.AsyncClient, settings: Settings, payer: Payer, at: datetime
) -> str:
    """An order placed, paid at the sandbox and credited at `at` (the clock frozen there)."""
    clock.freeze(at)
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return str(order["id"])


@pytest.mark.parametrize(("zone", "year", "date"), ZONES)
async def test_a_receipt_is_numbered_in_the_operators_year_and_dated_the_same(
    db: Database, settings: Settings, zone: str, year: int, date: str
) -> None:
    """Paid at 16:30 UTC on 31 December: the worker's receipt job numbers it `R2027-000001` in
    Manila, `R2026-000001` in UTC; the PDF's date is the same day of the same zone, named."""
    operator = _in(settings, zone)
    app = create_app(operator, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        payer = await _payer_at(db, operator, NEW_YEAR_IN_MANILA)
        order_id = await _credited_at(client, operator, payer, NEW_YEAR_IN_MANILA)
        await run_worker(app, db, operator)  # the receipt job numbers it
        row = await order_row(db, order_id)
        assert row.fulfilled_at == NEW_YEAR_IN_MANILA
        assert row.receipt_number == f"R{year}-000001"
        r = await client.get(f"/api/v1/orders/{order_id}/receipt", headers=payer.auth)
        assert r.status_code == 200, r.text
        words = _text(r.content)
        assert f"R{year}-000001" in words, words
        assert date in words, words
        if zone != "UTC":
            assert f"({zone})" in words, words
        r = await client.get(f"/api/v1/orders/{order_id}/receipt", headers={**payer.auth, **JSON})
        assert r.json()["number"] == f"R{year}-000001", r.text
    async with db.read() as s:
        assert await s.get(ReceiptCounter, f"receipt:{year}") is not None
        other = await s.get(ReceiptCounter, f"receipt:{2026 if year == 2027 else 2027}")
        assert other is None or other.value == 0


@pytest.mark.parametrize(("zone", "year", "date"), ZONES)
async def test_a_receipt_asked_for_first_is_numbered_in_the_operators_year(
    db: Database, settings: Settings, zone: str, year: int, date: str
) -> None:
    """The payer asking for the receipt before the worker ran numbers it (the endpoint): the
    same year."""
    operator = _in(settings, zone)
    app = create_app(operator, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        payer = await _payer_at(db, operator, NEW_YEAR_IN_MANILA)
        order_id = await _credited_at(client, operator, payer, NEW_YEAR_IN_MANILA)
        r = await client.get(f"/api/v1/orders/{order_id}/receipt", headers={**payer.auth, **JSON})
        assert r.status_code == 200 and r.json()["number"] == f"R{year}-000001", r.text


@pytest.mark.parametrize(("zone", "year", "date"), ZONES)
async def test_a_credit_note_is_numbered_in_the_operators_year_of_the_refund(
    db: Database, settings: Settings, zone: str, year: int, date: str
) -> None:
    """Paid at 17:00 Manila on 31 December (`R2026-…` in both zones), refunded by our worker at
    00:30 Manila on 1 January: `C2027-000001` in Manila, `C2026-000001` in UTC — the receipt it
    corrects stays `R2026-000001`; the credit note's PDF is dated that same day."""
    operator = _in(settings, zone)
    app = create_app(operator, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        staff = await _staff(db)
        payer = await _payer_at(db, operator, EARLIER_THAT_DAY)
        order_id = await _credited_at(client, operator, payer, EARLIER_THAT_DAY)
        await run_worker(app, db, operator)
        assert (await order_row(db, order_id)).receipt_number == "R2026-000001"
        clock.freeze(NEW_YEAR_IN_MANILA)
        payer = await _signed_in_again(db, operator, payer)
        await _refund(client, staff, order_id, amount=500)
        await run_worker(app, db, operator)  # the refund job completes it, numbered then
        [refund] = await _refunds(client, payer, order_id)
        assert refund["state"] == "succeeded", refund
        assert refund["credit_note_number"] == f"C{year}-000001", refund
        r = await client.get(refund["credit_note_url"], headers=payer.auth)
        assert r.status_code == 200, r.text
        words = _text(r.content)
        assert f"C{year}-000001" in words and "R2026-000001" in words, words
        assert date in words, words
    await assert_ledger_balanced(db)


async def test_a_refund_at_the_provider_reported_by_webhook_is_numbered_in_the_operators_year(
    db: Database, settings: Settings
) -> None:
    """A refund made in the provider's dashboard, reported at 00:30 Manila on 1 January: its
    credit note (numbered by the webhook's transaction) is `C2027-000001` in Manila."""
    operator = _in(settings, "Asia/Manila")
    app = create_app(operator, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        payer = await _payer_at(db, operator, EARLIER_THAT_DAY)
        order_id = await _credited_at(client, operator, payer, EARLIER_THAT_DAY)
        await run_worker(app, db, operator)
        clock.freeze(NEW_YEAR_IN_MANILA)
        payer = await _signed_in_again(db, operator, payer)
        row = await order_row(db, order_id)
        obj = await sandbox_object(db, row.reference, refunded=700, refund_id="dash-ny",
                                   refund_amount=700)
        body, headers = signed_event(operator, "refund.succeeded", obj,
                                     at=int(NEW_YEAR_IN_MANILA.timestamp()))
        r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
        assert r.status_code == 200, r.text
        await run_worker(app, db, operator)
        [refund] = await _refunds(client, payer, order_id)
        assert refund["credit_note_number"] == "C2027-000001", refund
    await assert_ledger_balanced(db)


async def test_the_backfill_numbers_in_the_operators_year(
    db: Database, settings: Settings
) -> None:
    """A refund completed at 16:30 UTC on 31 December, without a credit note: the backfill in
    Manila counts it in 2027 (dry run) and numbers it `C2027-000001`."""
    operator = _in(settings, "Asia/Manila")
    app = create_app(operator, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        staff = await _staff(db)
        payer = await _payer_at(db, operator, EARLIER_THAT_DAY)
        order_id = await _credited_at(client, operator, payer, EARLIER_THAT_DAY)
        await run_worker(app, db, operator)
        clock.freeze(NEW_YEAR_IN_MANILA)
        await _refund(client, staff, order_id, amount=500)
        await run_worker(app, db, operator)

    async def forget(s: Any) -> None:
        await s.execute(update(Refund).values(credit_note_number=None))
        await s.execute(
            delete(ReceiptCounter).where(ReceiptCounter.name.startswith("credit_note"))
        )

    await db.run(forget)
    clock.freeze(datetime(2027, 3, 1, tzinfo=UTC))  # run months later: the completion counts
    actor = command_line_actor("receipts backfill-credit-notes")
    dry = await backfill_credit_notes(db, actor, zone="Asia/Manila", dry_run=True)
    assert dry.due == {2027: 1}, dry
    done = await backfill_credit_notes(db, actor, zone="Asia/Manila")
    assert done.numbered == {2027: ["C2027-000001"]}, done


# --- the command line ------------------------------------------------------------------------


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(command, list(args))
    return result.exit_code, result.output


def _zone(monkeypatch: pytest.MonkeyPatch, zone: str) -> None:
    monkeypatch.setenv("SIMCHARGE_OPERATOR_TIMEZONE", zone)
    get_settings.cache_clear()


async def _counters(url: str) -> dict[str, int]:
    db = Database.from_url(url)
    try:
        async with db.read() as s:
            rows = (await s.execute(select(ReceiptCounter.name, ReceiptCounter.value))).all()
        return {str(name): int(value) for name, value in rows}
    finally:
        await db.dispose()


@pytest.mark.parametrize(("zone", "year", "date"), ZONES)
def test_receipts_status_and_continue_take_the_operators_year_as_this_year(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, zone: str, year: int, date: str
) -> None:
    """At 16:30 UTC on 31 December, "this year" is 2027 in Manila, 2026 in UTC: `status` says
    so and which number each series issues next; `continue --after 5` (a plain number) moves
    that year's series."""
    _zone(monkeypatch, zone)
    clock.freeze(NEW_YEAR_IN_MANILA)
    code, out = invoke("receipts", "status")
    assert code == 0, out
    assert "no receipt or credit note issued yet" in out, out
    assert f"this year is {year} in {zone}: next R{year}-000001, C{year}-000001" in out, out

    code, out = invoke("receipts", "continue", "--series", "receipt", "--after", "5")
    assert code == 0, out
    assert f"the receipt series of {year} continues after R{year}-000005" in out, out
    assert f"the next is R{year}-000006" in out, out
    assert asyncio.run(_counters(cli_env)) == {f"receipt:{year}": 5}

    code, out = invoke("receipts", "status")
    assert code == 0, out
    assert f"receipt     {year}  R{year}-000005    none" in out, out
    assert f"this year is {year} in {zone}: next R{year}-000006, C{year}-000001" in out, out

    # A number as printed names its own year, whatever this year is.
    code, out = invoke("receipts", "continue", "--series", "credit-note", "--after",
                       "C2026-000003")
    assert code == 0 and "the credit-note series of 2026 continues after C2026-000003" in out


def test_a_bad_zone_is_refused_at_start_up(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator zone the time zone database does not know stops every command, the
    receipts' too, before it touches a counter: one line naming the setting, exit 2."""
    with pytest.raises(ValidationError):
        Settings(_env_file=None, operator_timezone="Mars/Olympus_Mons")
    from simcharge import cli

    _zone(monkeypatch, "Mars/Olympus_Mons")
    monkeypatch.setattr("sys.argv", ["simcharge", "receipts", "continue", "--series",
                                     "receipt", "--after", "5"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2
    said = capsys.readouterr().err
    assert "cannot start" in said and "operator_timezone" in said.lower(), said
    assert asyncio.run(_counters(cli_env)) == {}


def test_year_of_is_the_year_of_the_date_printed() -> None:
    assert year_of(NEW_YEAR_IN_MANILA, "Asia/Manila") == 2027
    assert year_of(NEW_YEAR_IN_MANILA, "UTC") == 2026
    assert year_of(datetime(2027, 1, 1, 5, 0, tzinfo=UTC), "America/Mexico_City") == 2026
    assert year_of(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), "UTC") == 2026


# --- every caller passes the zone ------------------------------------------------------------

NUMBERING = {
    "issue_receipt_number", "issue_credit_note", "issue_credit_notes", "backfill_credit_notes",
    "complete_refund", "apply_refund_news", "settle_provider_refunds", "record_provider_refund",
    "record_lost_dispute", "note_refunded_status", "refund_not_ours",
}
"""The functions that may number a receipt or a credit note: their `zone` defaults to UTC (the
setting's default), so a caller that forgot it would number in UTC's year in silence."""
REFUSALS_ONLY = {("backoffice/jobs.py", "complete_refund")}
"""A discarded refund job settles its refund as refused: nothing is numbered."""


def test_every_caller_in_the_code_passes_the_operators_zone() -> None:
    root = Path(__file__).resolve().parents[2] / "src" / "simcharge"
    missing = []
    for path in root.rglob("*.py"):
        where = str(path.relative_to(root))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in NUMBERING or (where, name) in REFUSALS_ONLY:
                continue
            if not any(k.arg == "zone" for k in node.keywords):
                missing.append(f"{where}:{node.lineno} {name}")
    assert missing == [], missing
