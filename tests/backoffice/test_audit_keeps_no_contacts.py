"""The audit log is append-only and kept for ever, so it keeps no customer's e-mail address,
phone number or MSISDN: a search records what kind of thing was typed, its length and whose
accounts it showed (found by the twelfth round's review: `customer.search` kept `q` — the
e-mail typed — after the customer had closed their account and every sweep had run); money and
line actions name the line by id, not by number."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line, LineState
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import idem, new_payer


async def _audited(db: Database) -> list[AuditEntry]:
    async with db.read() as s:
        return list((await s.execute(select(AuditEntry))).scalars().all())


def _text(entry: AuditEntry) -> str:
    return json.dumps([entry.before, entry.after, entry.details], default=str)


async def test_a_search_keeps_whose_accounts_it_showed_never_what_was_typed(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    typed = {
        payer.email: "email",
        payer.line.msisdn: "number",
        payer.line.iccid: "number",
        str(payer.account_id): "id",
    }
    for q in typed:
        r = await client.get("/api/v1/admin/customers", params={"q": q}, headers=agent.auth)
        assert [c["id"] for c in r.json()] == [str(payer.account_id)], q
    r = await client.get("/api/v1/admin/customers", params={"q": "zz-nobody-zz"}, headers=agent.auth)
    assert r.json() == []
    await web_sign_in(client, agent)
    page = await client.get("/backoffice/customers", params={"q": payer.email.upper()})
    assert page.status_code == 200 and payer.email in page.text  # the page shows it; the log not

    searches = [e for e in await _audited(db) if e.action == "customer.search"]
    assert [e.details for e in searches] == [
        *(
            {"kind": kind, "length": len(q), "found": 1, "accounts": [str(payer.account_id)]}
            for q, kind in typed.items()
        ),
        {"kind": "text", "length": len("zz-nobody-zz"), "found": 0, "accounts": []},
        {"kind": "email", "length": len(payer.email), "found": 1,
         "accounts": [str(payer.account_id)]},
    ]  # fmt: skip
    for entry in searches:
        for q in (payer.email, payer.email.upper(), payer.line.msisdn, payer.line.iccid):
            assert q not in _text(entry)


async def test_an_adjustment_and_an_unfreeze_name_the_line_by_id_not_by_number(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    r = await client.post(
        f"/api/v1/admin/lines/{payer.line.id}/adjustments",
        headers={**agent.auth, **idem()},
        json={"amount": 300, "reason": "goodwill for the slow data"},
    )
    assert r.status_code in (200, 201), r.text
    now = utcnow()
    await db.run(lambda s: s.execute(
        update(Line).where(Line.id == payer.line.id).values(
            state=LineState.frozen, validity_end=now + timedelta(days=20),
            state_changed_at=now - timedelta(days=3), last_activity_at=now - timedelta(days=3),
        )
    ))  # fmt: skip
    r = await client.post(f"/api/v1/admin/lines/{payer.line.id}/unfreeze", headers=agent.auth)
    assert r.status_code == 200, r.text

    entries = {e.action: e for e in await _audited(db)}
    for action in ("adjustment.apply", "line.unfreeze"):
        entry = entries[action]
        assert (entry.target_type, entry.target_id) == ("line", str(payer.line.id)), action
        assert payer.line.msisdn not in _text(entry), action
        assert payer.line.msisdn.lstrip("+") not in _text(entry), action


async def test_an_order_list_by_number_records_the_line_not_the_number(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    for msisdn in (payer.line.msisdn, "+15005550199"):
        r = await client.get("/api/v1/admin/orders", params={"msisdn": msisdn}, headers=agent.auth)
        assert r.status_code == 200, r.text
    lists = [e for e in await _audited(db) if e.action == "order.list"]
    assert [e.details for e in lists] == [
        {"line": str(payer.line.id), "found": 0},
        {"number": True, "found": 0},
    ]
    for entry in lists:
        assert "5005550199" not in _text(entry)
        assert payer.line.msisdn.lstrip("+") not in _text(entry)
