"""A manual adjustment is asked for once per caller and `Idempotency-Key` (the page's form
carries a one-time key): a retry answers the first adjustment and moves nothing more, the key
with another request is refused, and copies arriving at once make one adjustment."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from simcharge.app import create_app
from simcharge.backoffice.models import Adjustment, AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lines.models import Line
from tests.backoffice.helpers import adjust_key_of, new_staff, web_sign_in
from tests.factories import load_demo_catalog
from tests.locks import until_waiting
from tests.orders.helpers import assert_ledger_balanced
from tests.tmf654.helpers import api_key, new_holder, totals


def _url(line_id: uuid.UUID) -> str:
    return f"/api/v1/admin/lines/{line_id}/adjustments"


async def _made(db: Database, line_id: uuid.UUID) -> tuple[int, int, int]:
    """The line's adjustments, their ledger transfers and their audit entries."""
    async with db.read() as s:
        adjustments = (
            await s.execute(
                select(func.count()).select_from(Adjustment).where(Adjustment.line_id == line_id)
            )
        ).scalar_one()
        transfers = (
            await s.execute(
                select(func.count())
                .select_from(LedgerTransfer)
                .join(Adjustment, Adjustment.transfer_id == LedgerTransfer.id)
                .where(Adjustment.line_id == line_id, LedgerTransfer.code == "adjustment")
            )
        ).scalar_one()
        audited = (
            await s.execute(
                select(func.count())
                .select_from(AuditEntry)
                .where(
                    AuditEntry.target_id == str(line_id),
                    AuditEntry.action.in_(("adjustment.apply", "adjustment.request")),
                )
            )
        ).scalar_one()
    return int(adjustments), int(transfers), int(audited)


async def test_a_retried_adjustment_is_made_once(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    holder = await new_holder(db)
    agent = await new_staff(db, settings, "agent")
    tool = await api_key(db, "adjustments:write")
    body = {"target": "wallet", "amount": 300, "reason": "goodwill, ticket 42"}
    # the answer is lost on the way back; the caller sends the same again
    for auth, key in ((agent.auth, "retry-1"), (tool, "retry-1")):
        first = await client.post(
            _url(holder.line.id), json=body, headers={**auth, "Idempotency-Key": key}
        )
        again = await client.post(
            _url(holder.line.id), json=body, headers={**auth, "Idempotency-Key": key}
        )
        assert first.status_code == again.status_code == 201, (first.text, again.text)
        assert again.json() == first.json() and first.json()["state"] == "applied"
    # the key is the caller's: the staff member's and the API key's are two adjustments
    assert await totals(db, holder.line.wallet_account_id) == (2000 + 2 * 300, 0)
    assert await _made(db, holder.line.id) == (2, 2, 2)
    # one waiting for a second person is asked for once too
    big = {"target": "wallet", "amount": 5000, "reason": "paid twice"}
    headers = {**agent.auth, "Idempotency-Key": "retry-2"}
    first = await client.post(_url(holder.line.id), json=big, headers=headers)
    again = await client.post(_url(holder.line.id), json=big, headers=headers)
    assert first.json()["state"] == "awaiting_approval"
    assert (again.status_code, again.json()) == (201, first.json())
    assert await _made(db, holder.line.id) == (3, 2, 3)
    await assert_ledger_balanced(db)


async def test_the_same_key_with_another_request_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    holder = await new_holder(db)
    other = await new_holder(db)
    agent = await new_staff(db, settings, "agent")
    headers = {**agent.auth, "Idempotency-Key": "once"}
    body: dict[str, Any] = {"target": "wallet", "amount": 300, "reason": "goodwill"}
    r = await client.post(_url(holder.line.id), json=body, headers=headers)
    assert r.status_code == 201, r.text
    for line, changed in [
        (holder.line.id, {"amount": 301}),
        (holder.line.id, {"reason": "goodwill again"}),
        (holder.line.id, {"target": str(holder.data_bucket), "amount": 1_048_576}),
        (holder.line.id, {"ticket_id": str(uuid.uuid4())}),
        (other.line.id, {}),
    ]:
        r = await client.post(_url(line), json={**body, **changed}, headers=headers)
        assert r.status_code == 422, (changed, r.text)
        assert r.json()["type"] == "/problems/idempotency-key-reused"
        assert r.json()["field"] == "Idempotency-Key"
    assert await totals(db, holder.line.wallet_account_id) == (2300, 0)
    assert await totals(db, holder.data_bucket) == (500 * 1_048_576, 0)
    assert await totals(db, other.line.wallet_account_id) == (2000, 0)
    assert await _made(db, holder.line.id) == (1, 1, 1)
    assert await _made(db, other.line.id) == (0, 0, 0)


async def test_an_adjustment_without_a_key_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    holder = await new_holder(db)
    agent = await new_staff(db, settings, "agent")
    body = {"target": "wallet", "amount": 300, "reason": "goodwill"}
    for headers in (agent.auth, {**agent.auth, "Idempotency-Key": ""}):
        r = await client.post(_url(holder.line.id), json=body, headers=headers)
        assert r.status_code == 400, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["type"] == "/problems/idempotency-key-missing"
        assert problem["field"] == "Idempotency-Key"
        assert "Idempotency-Key" in problem["detail"]
    assert await totals(db, holder.line.wallet_account_id) == (2000, 0)
    assert await _made(db, holder.line.id) == (0, 0, 0)


async def test_the_adjustment_form_sent_twice_is_one_adjustment(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    holder = await new_holder(db)
    agent = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{holder.account_id}")
    key = adjust_key_of(page.text, holder.line.id)
    form = {"csrf": csrf, "target": "wallet", "amount": "3.00", "reason": "sorry", "idem": key}
    url = f"/backoffice/lines/{holder.line.id}/adjust"
    # a double click, or the browser sending the form again
    first = await client.post(url, data=form)
    again = await client.post(url, data=form)
    assert first.status_code == again.status_code == 303, (first.text, again.text)
    assert first.headers["location"] == again.headers["location"]
    assert "applied" in first.headers["location"]
    assert await totals(db, holder.line.wallet_account_id) == (2300, 0)
    assert await _made(db, holder.line.id) == (1, 1, 1)
    # the page shown again has a new key: a second adjustment is another one
    page = await client.get(first.headers["location"])
    fresh = adjust_key_of(page.text, holder.line.id)
    assert fresh != key
    r = await client.post(url, data={**form, "idem": fresh})
    assert r.status_code == 303
    assert await totals(db, holder.line.wallet_account_id) == (2600, 0)
    # the old page's key with something else typed in: refused; a form without a key too
    r = await client.post(url, data={**form, "amount": "4.00"})
    assert r.status_code == 422 and "already used with a different request" in r.text
    r = await client.post(url, data={k: v for k, v in form.items() if k != "idem"})
    assert r.status_code == 400 and "Idempotency-Key" in r.text
    assert await totals(db, holder.line.wallet_account_id) == (2600, 0)
    assert await _made(db, holder.line.id) == (2, 2, 2)


@pytest.mark.postgres_only("requests at once: SQLite has one writer at a time")
async def test_copies_of_an_adjustment_at_once_make_one(
    fresh_db: Database, settings: Settings
) -> None:
    """Six copies wait together behind the line and then race: the first makes the adjustment,
    the others answer it — none counts it against the four-eyes threshold (an API key asking
    for 15.00 twice would be refused), none fails."""
    db = fresh_db
    await db.run(load_demo_catalog)
    holder = await new_holder(db)
    tool = await api_key(db, "adjustments:write")
    headers = {**tool, "Idempotency-Key": uuid.uuid4().hex}
    body = {"target": "wallet", "amount": 1500, "reason": "goodwill"}
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        async with db.transaction() as hold:
            await hold.execute(
                select(Line.id).where(Line.id == holder.line.id).with_for_update()
            )
            copies = [
                asyncio.create_task(client.post(_url(holder.line.id), json=body, headers=headers))
                for _ in range(6)
            ]
            await until_waiting(db, 6)
        answers = await asyncio.wait_for(asyncio.gather(*copies), 60)
    assert [r.status_code for r in answers] == [201] * 6, [r.text for r in answers]
    assert len({r.text for r in answers}) == 1
    assert answers[0].json()["state"] == "applied"
    assert await totals(db, holder.line.wallet_account_id) == (3500, 0)
    assert await _made(db, holder.line.id) == (1, 1, 1)
    await assert_ledger_balanced(db)


@pytest.mark.postgres_only("requests at once: SQLite has one writer at a time")
async def test_one_key_on_two_lines_at_once_is_one_adjustment_and_a_refusal(
    fresh_db: Database, settings: Settings
) -> None:
    """Two lines' locks do not line the two up: the first holds its adjustment's row while its
    transfer waits for the wallet, the second's row waits for it — and is then refused."""
    db = fresh_db
    await db.run(load_demo_catalog)
    first, second = await new_holder(db), await new_holder(db)
    agent = await new_staff(db, settings, "agent")
    headers = {**agent.auth, "Idempotency-Key": uuid.uuid4().hex}
    body = {"target": "wallet", "amount": 300, "reason": "goodwill"}
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        async with db.transaction() as hold:
            await hold.execute(
                select(LedgerAccount.id)
                .where(LedgerAccount.id == first.line.wallet_account_id)
                .with_for_update()
            )
            made = asyncio.create_task(
                client.post(_url(first.line.id), json=body, headers=headers)
            )
            await until_waiting(db, 1)
            refused = asyncio.create_task(
                client.post(_url(second.line.id), json=body, headers=headers)
            )
            await until_waiting(db, 2)
        a, b = await asyncio.wait_for(asyncio.gather(made, refused), 60)
    assert a.status_code == 201 and a.json()["state"] == "applied", a.text
    assert b.status_code == 422 and b.json()["type"] == "/problems/idempotency-key-reused", b.text
    assert await totals(db, first.line.wallet_account_id) == (2300, 0)
    assert await totals(db, second.line.wallet_account_id) == (2000, 0)
    assert await _made(db, first.line.id) == (1, 1, 1)
    assert await _made(db, second.line.id) == (0, 0, 0)
    await assert_ledger_balanced(db)
