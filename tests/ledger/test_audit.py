"""`verify_ledger` and `simcharge ledger verify`: the books checked from the stored rows."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.ledger.audit import verify_ledger
from simcharge.ledger.models import LedgerTransfer, TransferKind
from simcharge.ledger.service import MAX_AMOUNT, NewTransfer, post_transfers
from tests.factories import create_ledger_account
from tests.ledger.test_service import funded, t


async def _some_activity(session: AsyncSession) -> tuple[object, object, object]:
    source, wallet = await funded(session, 1000)
    sink = await create_ledger_account(session)
    held, dropped = uuid7(), uuid7()
    await post_transfers(
        session,
        [
            t(wallet, sink, 100),
            t(wallet, sink, 300, id=held, kind=TransferKind.pending),
            t(wallet, sink, 50, id=dropped, kind=TransferKind.pending),
            NewTransfer(uuid7(), 120, kind=TransferKind.post_pending, pending_id=held),
            NewTransfer(uuid7(), kind=TransferKind.void_pending, pending_id=dropped),
            t(wallet, sink, 70, kind=TransferKind.pending, timeout_s=60),
        ],
    )
    return source, wallet, sink


async def test_a_ledger_written_by_the_service_verifies(session: AsyncSession) -> None:
    await _some_activity(session)
    report = await verify_ledger(session)
    assert report.ok, report.violations
    assert report.units["USD"] == (0, 0)
    assert report.transfers == 7
    assert (report.open_reservations, report.overdue_reservations) == (1, 0)
    later = await verify_ledger(session, now=utcnow() + timedelta(minutes=5))
    assert (later.open_reservations, later.overdue_reservations) == (1, 1)


async def test_a_stored_balance_that_differs_from_its_transfers_is_reported(
    session: AsyncSession,
) -> None:
    _, wallet, _ = await _some_activity(session)
    await session.execute(
        text("UPDATE ledger_accounts SET credits_posted = credits_posted + 5 WHERE id = :id"),
        {"id": wallet if session.bind.dialect.name == "postgresql" else wallet.hex},  # type: ignore[attr-defined]
    )
    report = await verify_ledger(session)
    assert not report.ok
    assert report.units["USD"] == (-5, 0)
    [mismatch] = report.mismatched
    assert "credits_posted stored 1005 but transfers give 1000" in mismatch
    assert any("does not sum to zero" in v for v in report.violations)


async def test_a_crossed_bound_is_reported(session: AsyncSession) -> None:
    source, _, _ = await _some_activity(session)
    dialect = session.bind.dialect.name  # type: ignore[attr-defined]
    if dialect == "postgresql":
        names = await session.execute(
            text(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'ledger_accounts'::regclass"
                " AND contype = 'c'"
            )
        )
        for (name,) in names.all():
            await session.execute(text(f'ALTER TABLE ledger_accounts DROP CONSTRAINT "{name}"'))
        key = source
    else:
        await session.execute(text("PRAGMA ignore_check_constraints = ON"))
        key = source.hex  # type: ignore[attr-defined]
    try:
        # The source has paid out more than it received: as a bounded account it is past its bound.
        await session.execute(
            text("UPDATE ledger_accounts SET debits_must_not_exceed_credits = true WHERE id = :id"),
            {"id": key},
        )
        report = await verify_ledger(session)
    finally:
        if dialect != "postgresql":
            await session.execute(text("PRAGMA ignore_check_constraints = OFF"))
    assert report.crossed == [str(source) if dialect == "postgresql" else source.hex]  # type: ignore[attr-defined]
    assert any("crossed its balance bound" in v for v in report.violations)


async def test_units_whose_totals_pass_a_bigint_verify(session: AsyncSession) -> None:
    """Each account within the bound (the ledger allows it), their sum past 2^63 - 1: SQLite's
    SUM raised "integer overflow"; summed in halves, both databases verify."""
    for _ in range(3):
        a = await create_ledger_account(session, "SMS")
        b = await create_ledger_account(session, "SMS")
        await post_transfers(session, [t(a, b, MAX_AMOUNT, "SMS")])
    report = await verify_ledger(session)
    assert report.ok, report.violations
    assert report.units["SMS"] == (0, 0)


async def test_a_damaged_account_past_a_bigint_is_reported(session: AsyncSession) -> None:
    """Transfers written around the ledger that add up past 2^63 - 1 for one account: reported
    with the exact sum, on both databases."""
    a = await create_ledger_account(session, "SMS")
    b = await create_ledger_account(session, "SMS")
    await post_transfers(session, [t(a, b, MAX_AMOUNT, "SMS")])
    session.add(LedgerTransfer(id=uuid7(), debit_account_id=a, credit_account_id=b,
                               amount=MAX_AMOUNT, unit="SMS", kind="posted", code="damage"))
    await session.flush()
    report = await verify_ledger(session)
    assert not report.ok
    assert report.units["SMS"] == (0, 0)
    [debits, credits] = sorted(report.mismatched, key=lambda m: "credits_posted" in m)
    assert debits.endswith(
        f"(SMS): debits_posted stored {MAX_AMOUNT} but transfers give {2 * MAX_AMOUNT}"
    )
    assert credits.endswith(
        f"(SMS): credits_posted stored {MAX_AMOUNT} but transfers give {2 * MAX_AMOUNT}"
    )
