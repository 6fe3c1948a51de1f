"""A back-office adjustment the line cannot cover (fifteenth round's finance walkthrough).
Before, a `-999999` adjustment on a small wallet was stored `awaiting_approval`, and approving
it failed with 409 `transfer-rejected` (`exceeds_credits`): it waited forever. Now the balance
is checked before anything is stored, above the four-eyes threshold as below it (409
`insufficient-balance`, field `amount`, saying what it takes and what is there), as TMF654's
`adjustBalance` does. One that waits and whose balance was spent meanwhile is refused on
approval with the same problem (field `adjustment_id`) and stays waiting: the balance may cover
it later, or the approver rejects it with a note."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import func, select

from simcharge.backoffice.models import Adjustment, AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.ledger import chart
from simcharge.ledger.audit import verify_ledger
from simcharge.ledger.service import NewTransfer, ensure_accounts, post_transfers
from simcharge.lines.models import Line
from simcharge.lines.service import credit_wallet
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import assert_ledger_balanced
from tests.tmf654.helpers import MB, new_holder, totals, written


async def _audited(db: Database, line_id: uuid.UUID) -> list[str]:
    async with db.read() as s:
        found = await s.execute(
            select(AuditEntry.action)
            .where(AuditEntry.target_id == str(line_id))
            .order_by(AuditEntry.at, AuditEntry.id)
        )
        return list(found.scalars())


async def _adjustments(db: Database, line_id: uuid.UUID) -> int:
    async with db.read() as s:
        found = await s.execute(
            select(func.count()).select_from(Adjustment).where(Adjustment.line_id == line_id)
        )
        return int(found.scalar_one())


async def _spend(db: Database, line_id: uuid.UUID, amount: int) -> None:
    """What usage takes from the wallet (as charging posts it)."""

    async def run(s: object) -> None:
        line = await s.get(Line, line_id)  # type: ignore[attr-defined]
        usage = chart.usage_revenue(line.currency)
        await ensure_accounts(s, [usage])  # type: ignore[arg-type]
        await post_transfers(s, [NewTransfer(  # type: ignore[arg-type]
            id=uuid7(), amount=amount, unit=line.currency,
            debit_account_id=line.wallet_account_id, credit_account_id=usage.id,
            code="usage", reference=f"test:{line_id}")], now=utcnow())

    await db.run(run)


async def _balanced(db: Database) -> None:
    await assert_ledger_balanced(db)
    async with db.read() as s:
        report = await verify_ledger(s)
    assert all(v == (0, 0) for v in report.units.values()), report.units
    assert not report.mismatched and not report.missing_accounts


async def test_a_debit_beyond_the_balance_is_refused_at_once_above_and_below_the_threshold(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    h = await new_holder(db, wallet=1500, data_mb=10)
    agent = await new_staff(db, settings, "agent")
    url = f"/api/v1/admin/lines/{h.line.id}/adjustments"
    before = await written(db)
    for n, amount in enumerate((-999_999, -1600)):  # above the threshold (2000), and below
        r = await client.post(url, headers={**agent.auth, "Idempotency-Key": f"k{n}"},
                              json={"target": "wallet", "amount": amount, "reason": "oops"})
        assert r.status_code == 409, r.text
        problem = r.json()
        assert (problem["type"], problem["field"]) == ("/problems/insufficient-balance", "amount")
        assert problem["title"] == "There is not enough balance for this."
        taken = "9999.99 USD" if amount == -999_999 else "16.00 USD"
        assert problem["detail"] == (
            f"This adjustment takes {taken} and there is only 15.00 USD: nothing was changed."
        )
    # A bucket, in its unit.
    r = await client.post(url, headers={**agent.auth, "Idempotency-Key": "k3"},
                          json={"target": str(h.data_bucket), "amount": -11 * MB,
                                "reason": "oops"})
    assert (r.status_code, r.json()["type"]) == (409, "/problems/insufficient-balance")
    assert f"{11 * MB} DATA_B" in r.json()["detail"] and f"{10 * MB} DATA_B" in r.json()["detail"]
    # Nothing stored, nothing audited, nothing moved.
    assert await _adjustments(db, h.line.id) == 0
    assert await _audited(db, h.line.id) == []
    assert await written(db) == before
    # What the wallet holds can be taken (within the threshold: at once).
    r = await client.post(url, headers={**agent.auth, "Idempotency-Key": "k4"},
                          json={"target": "wallet", "amount": -1500, "reason": "paid twice"})
    assert (r.status_code, r.json()["state"]) == (201, "applied"), r.text
    assert await totals(db, h.line.wallet_account_id) == (0, 0)
    await _balanced(db)


async def test_a_waiting_debit_whose_balance_was_spent_is_refused_on_approval_and_waits(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    h = await new_holder(db, wallet=3000)
    agent = await new_staff(db, settings, "agent")
    finance = await new_staff(db, settings, "finance")
    r = await client.post(f"/api/v1/admin/lines/{h.line.id}/adjustments",
                          headers={**agent.auth, "Idempotency-Key": "w1"},
                          json={"target": "wallet", "amount": -2500, "reason": "paid twice"})
    assert (r.status_code, r.json()["state"]) == (201, "awaiting_approval"), r.text
    adjustment = r.json()["id"]
    await _spend(db, h.line.id, 1000)
    decision = f"/api/v1/admin/adjustments/{adjustment}/decision"
    r = await client.post(decision, headers=finance.auth, json={"approve": True})
    assert r.status_code == 409, r.text
    problem = r.json()
    assert (problem["type"], problem["field"]) == (
        "/problems/insufficient-balance", "adjustment_id")
    assert problem["detail"] == (
        "This adjustment takes 25.00 USD and there is only 20.00 USD now: reject it, or approve "
        "it once the balance covers it."
    )
    async with db.read() as s:
        row = await s.get(Adjustment, uuid.UUID(adjustment))
        assert row is not None
        assert (row.state, row.transfer_id, row.decided_by) == ("awaiting_approval", None, None)
    assert await totals(db, h.line.wallet_account_id) == (2000, 0)
    assert await _audited(db, h.line.id) == ["adjustment.request"]
    # Still listed as waiting; once the balance covers it, approved and posted.
    r = await client.get("/api/v1/admin/adjustments", headers=finance.auth)
    assert adjustment in [a["id"] for a in r.json()]
    await db.run(lambda s: credit_wallet(s, h.line, 500, source=f"test:more:{h.line.id}"))
    r = await client.post(decision, headers=finance.auth, json={"approve": True})
    assert (r.status_code, r.json()["state"]) == (200, "applied"), r.text
    assert await totals(db, h.line.wallet_account_id) == (0, 0)
    assert await _audited(db, h.line.id) == ["adjustment.request", "adjustment.approve"]
    await _balanced(db)


async def test_the_page_says_why_and_the_approver_rejects_it_with_a_note(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    h = await new_holder(db, wallet=3000)
    agent = await new_staff(db, settings, "agent")
    finance = await new_staff(db, settings, "finance")
    r = await client.post(f"/api/v1/admin/lines/{h.line.id}/adjustments",
                          headers={**agent.auth, "Idempotency-Key": "p1"},
                          json={"target": "wallet", "amount": -2500, "reason": "paid twice"})
    adjustment = r.json()["id"]
    await _spend(db, h.line.id, 2900)
    csrf = await web_sign_in(client, finance)
    r = await client.post(f"/backoffice/adjustments/{adjustment}/approve", data={"csrf": csrf})
    assert r.status_code == 409, r.text
    assert "Adjustments awaiting approval" in r.text
    assert ("This adjustment takes 25.00 USD and there is only 1.00 USD now: reject it, or "
            "approve it once the balance covers it.") in r.text
    assert f"/adjustments/{adjustment}/reject" in r.text  # still waiting, to be decided
    r = await client.post(f"/backoffice/adjustments/{adjustment}/reject",
                          data={"csrf": csrf, "note": "spent before it was approved"})
    assert r.status_code == 303, r.text
    async with db.read() as s:
        row = await s.get(Adjustment, uuid.UUID(adjustment))
        assert row is not None and row.state == "rejected"
        assert row.decision_note == "spent before it was approved"
    assert await totals(db, h.line.wallet_account_id) == (100, 0)
    await _balanced(db)
