"""A manual adjustment refuses a line not in service (fourteenth round, found by review): money
put on a SIM still in stock would be sold with it, and a terminated line's balances were
forfeited. As TMF654's `adjustBalance`: a line in stock takes nothing, a terminated one may be
debited (a correction) but not credited — also when the adjustment waited for a second person
and the line was terminated meanwhile. Refused: 409 `line-not-in-service`, nothing written."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select, update

from simcharge.backoffice.models import Adjustment, AdjustmentState
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import Line, LineState
from tests.backoffice.helpers import new_staff
from tests.orders.helpers import assert_ledger_balanced
from tests.tmf654.helpers import new_holder, totals


def _url(line_id: uuid.UUID) -> str:
    return f"/api/v1/admin/lines/{line_id}/adjustments"


async def _adjustments(db: Database, line_id: uuid.UUID) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(Adjustment).where(
            Adjustment.line_id == line_id))).scalar_one())  # fmt: skip


@pytest.mark.parametrize(
    ("state", "amount", "refused"),
    [
        (LineState.available, 100, True),
        (LineState.available, -100, True),
        (LineState.terminated, 100, True),
        (LineState.terminated, -100, False),  # a correction of a forfeited balance
    ],
)
async def test_a_line_not_in_service_takes_no_adjustment(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    state: LineState,
    amount: int,
    refused: bool,
) -> None:
    holder = await new_holder(db, wallet=300, state=state, owned=state is not LineState.available)
    agent = await new_staff(db, settings, "agent")
    r = await client.post(
        _url(holder.line.id),
        json={"target": "wallet", "amount": amount, "reason": "goodwill"},
        headers={**agent.auth, "Idempotency-Key": f"k-{state}-{amount}"},
    )
    if refused:
        assert r.status_code == 409, r.text
        assert r.json()["type"] == "/problems/line-not-in-service"
        assert r.json()["field"] == "line_id"
        assert await _adjustments(db, holder.line.id) == 0
        assert await totals(db, holder.line.wallet_account_id) == (300, 0)
    else:
        assert r.status_code == 201, r.text
        assert await totals(db, holder.line.wallet_account_id) == (200, 0)
    await assert_ledger_balanced(db)


async def test_an_adjustment_waiting_for_approval_is_refused_if_the_line_ended_meanwhile(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    holder = await new_holder(db, wallet=300)
    agent = await new_staff(db, settings, "agent")
    finance = await new_staff(db, settings, "finance")
    r = await client.post(
        _url(holder.line.id),
        json={"target": "wallet", "amount": 50_000, "reason": "paid twice"},
        headers={**agent.auth, "Idempotency-Key": "big"},
    )
    assert r.status_code == 201 and r.json()["state"] == "awaiting_approval", r.text
    adjustment = r.json()["id"]
    await db.run(lambda s: s.execute(update(Line).where(Line.id == holder.line.id)
                                     .values(state=LineState.terminated.value)))  # fmt: skip
    r = await client.post(
        f"/api/v1/admin/adjustments/{adjustment}/decision",
        json={"approve": True},
        headers=finance.auth,
    )
    assert r.status_code == 409, r.text
    assert (r.json()["type"], r.json()["field"]) == (
        "/problems/line-not-in-service", "adjustment_id")
    async with db.read() as s:
        row = await s.get(Adjustment, uuid.UUID(adjustment))
        assert row is not None and row.state == AdjustmentState.awaiting_approval.value
        assert row.transfer_id is None
    assert await totals(db, holder.line.wallet_account_id) == (300, 0)
    # Rejecting it still works: the approver closes it.
    r = await client.post(
        f"/api/v1/admin/adjustments/{adjustment}/decision",
        json={"approve": False},
        headers=finance.auth,
    )
    assert r.status_code == 200 and r.json()["state"] == "rejected", r.text
    await assert_ledger_balanced(db)
