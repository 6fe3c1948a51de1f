"""A TMF654 `topupBalance` is a sales channel's: controlled and traceable (fifteenth round's
finance walkthrough). Before, a `balance:write` key credited any amount from `funding:<CUR>`
with the code of a plan's wallet credit (`topup`) and left only a log line. Now the money
comes from the key's client's receivable (`channel:<client id>:<CUR>`: the shop or partner
collected it and owes it), the transfers have their own code (`tmf_topup`), each top-up is an
audit entry (`balance.topup`: the key, the line, the amount, what the request said of itself,
the idempotency key), and one request puts at most `SIMCHARGE_TMF654_TOPUP_MAX_AMOUNTS` on a
wallet (409 `topup-limit-exceeded`, field `amount`, nothing written)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from simcharge.auth.apikeys import create_api_key, rotate_api_key
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.ledger import chart
from simcharge.ledger.audit import verify_ledger
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from tests.orders.helpers import assert_ledger_balanced
from tests.tmf654.helpers import BASE, MB, Holder, new_holder, totals, written


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """At most 50.00 in a currency not listed, 300 yen."""
    return settings.model_copy(
        update={"tmf654_topup_max_minor": 5000, "tmf654_topup_max_amounts": "JPY:300"}
    )


async def _key(db: Database, *scopes: str) -> tuple[str, uuid.UUID, dict[str, str]]:
    """A new key: its prefix, its client and its bearer header."""
    issued = await db.run(lambda s: create_api_key(s, "shop", list(scopes)))
    return (issued.key.prefix, issued.key.client_id,
            {"Authorization": f"Bearer {issued.token}"})


def _topup(h: Holder, amount: float = 5, units: str = "USD", **extra: object) -> dict[str, object]:
    return {"amount": {"amount": amount, "units": units}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}, **extra}


async def _audited(db: Database, action: str = "balance.topup") -> list[AuditEntry]:
    async with db.read() as s:
        found = await s.execute(select(AuditEntry).where(AuditEntry.action == action))
        return list(found.scalars().all())


async def _moved(db: Database, action_id: str) -> list[LedgerTransfer]:
    async with db.read() as s:
        found = await s.execute(
            select(LedgerTransfer).where(LedgerTransfer.reference == f"balance:{action_id}")
        )
        return list(found.scalars().all())


async def _balanced(db: Database) -> None:
    await assert_ledger_balanced(db)
    async with db.read() as s:
        report = await verify_ledger(s)
    assert all(v == (0, 0) for v in report.units.values()), report.units
    assert not report.mismatched and not report.missing_accounts


async def test_a_topup_comes_from_its_clients_channel_and_is_audited_once(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db, wallet=1000)
    prefix, client_id, auth = await _key(db, "balance:write")
    body = _topup(
        h, 12.5,
        reason="cash at the counter", description="Shop 12, Makati",
        channel={"id": "shop-12", "name": "retail"},
        paymentMethod={"id": "cash", "name": "cash"},
        requestor={"id": "agent-7", "name": "Maria Santos", "role": "cashier",
                   "@referredType": "Individual"},
        voucher="VOUCHER-SECRET-123",
    )
    headers = {**auth, "Idempotency-Key": "till-7-0001", "User-Agent": "shop-pos/1.0"}
    r = await client.post(f"{BASE}/topupBalance", json=body, headers=headers)
    assert r.status_code == 201, r.text
    action = r.json()["id"]
    assert await totals(db, h.line.wallet_account_id) == (2250, 0)
    # The money came from the client's receivable, under the channel's own code.
    [moved] = await _moved(db, action)
    assert moved.code == "tmf_topup" and moved.amount == 1250
    assert moved.credit_account_id == h.line.wallet_account_id
    channel = chart.channel(str(client_id), "USD", chart.shard_of(h.line.id))
    assert moved.debit_account_id == channel.id
    async with db.read() as s:
        account = await s.get(LedgerAccount, channel.id)
        assert account is not None and account.code == "channel"
        assert (account.key or "").split("#")[0] == f"channel:{client_id}:USD"
        assert account.debits_posted == 1250 and account.credits_posted == 0
        funding = (await s.execute(select(LedgerTransfer).where(
            LedgerTransfer.reference == f"balance:{action}",
            LedgerTransfer.debit_account_id.in_(
                [chart.key_id(k) for k in chart.keys("funding:USD")])))).all()
        assert funding == []
    # One audit entry: who (the key, from where), the line, the amount, what the request said.
    [entry] = await _audited(db)
    assert entry.actor == f"apikey:{prefix}" and entry.staff_id is None
    assert entry.target_type == "line" and entry.target_id == str(h.line.id)
    assert entry.user_agent == "shop-pos/1.0"
    assert entry.after == {"amount": 1250, "unit": "USD",
                           "account": str(h.line.wallet_account_id),
                           "from": f"channel:{client_id}:USD"}
    assert entry.details == {
        "balance_action": action, "client": str(client_id), "idempotency_key": "till-7-0001",
        "reason": "cash at the counter", "description": "Shop 12, Makati",
        "channel": {"id": "shop-12", "name": "retail"},
        "paymentMethod": {"id": "cash", "name": "cash"},
        "requestor": {"id": "agent-7", "role": "cashier"},
    }
    text = json.dumps([entry.before, entry.after, entry.details])
    # Neither the voucher (a code worth money) nor a person's name nor the line's number.
    assert "VOUCHER" not in text and "Maria" not in text and h.line.msisdn not in text
    # The same request again is answered, not credited nor audited again.
    again = await client.post(f"{BASE}/topupBalance", json=body, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert await totals(db, h.line.wallet_account_id) == (2250, 0)
    assert len(await _audited(db)) == 1
    await _balanced(db)


async def test_each_client_has_its_own_channel_and_a_rotation_keeps_it(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db, wallet=0)
    prefix, one, auth = await _key(db, "balance:write")
    _, two, other = await _key(db, "balance:write")
    for headers in (auth, other):
        r = await client.post(f"{BASE}/topupBalance", json=_topup(h), headers=headers)
        assert r.status_code == 201, r.text
    rotated = await db.run(lambda s: rotate_api_key(s, prefix))
    assert rotated is not None
    r = await client.post(f"{BASE}/topupBalance", json=_topup(h, 3),
                          headers={"Authorization": f"Bearer {rotated.issued.token}"})
    assert r.status_code == 201, r.text
    shard = chart.shard_of(h.line.id)
    async with db.read() as s:
        first = await s.get(LedgerAccount, chart.channel(str(one), "USD", shard).id)
        second = await s.get(LedgerAccount, chart.channel(str(two), "USD", shard).id)
        assert first is not None and second is not None
        assert (first.debits_posted, second.debits_posted) == (800, 500)
    assert [e.details["client"] for e in await _audited(db)] == [str(one), str(two), str(one)]
    await _balanced(db)


async def test_a_topup_over_the_maximum_is_refused_and_nothing_is_written(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db, wallet=1000)
    _, _, auth = await _key(db, "balance:write")
    before = await written(db)
    r = await client.post(f"{BASE}/topupBalance", json=_topup(h, 50.01),
                          headers={**auth, "Idempotency-Key": "big"})
    assert r.status_code == 409, r.text
    error = r.json()
    assert (error["code"], error["field"], error["@type"]) == (
        "topup-limit-exceeded", "amount", "Error")
    assert error["reason"] == "This top-up is over the limit."
    assert "50.00 USD" in error["message"] and "adjustment" in error["message"]
    assert await written(db) == before and await _audited(db) == []
    # The maximum itself is taken; the key refused before is free for it.
    r = await client.post(f"{BASE}/topupBalance", json=_topup(h, 50),
                          headers={**auth, "Idempotency-Key": "big"})
    assert r.status_code == 201, r.text
    assert await totals(db, h.line.wallet_account_id) == (6000, 0)
    await _balanced(db)


async def test_the_maximum_is_per_currency(client: httpx.AsyncClient, db: Database) -> None:
    h = await new_holder(db, wallet=0, currency="JPY")
    _, _, auth = await _key(db, "balance:write")
    r = await client.post(f"{BASE}/topupBalance", json=_topup(h, 301, "JPY"), headers=auth)
    assert (r.status_code, r.json()["code"]) == (409, "topup-limit-exceeded")
    assert "300 JPY" in r.json()["message"]
    r = await client.post(f"{BASE}/topupBalance", json=_topup(h, 300, "JPY"), headers=auth)
    assert r.status_code == 201, r.text
    assert await totals(db, h.line.wallet_account_id) == (300, 0)


async def test_units_come_from_issuance_under_the_channels_code_and_are_audited(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Units have no money value: not bound by the money maximum, but coded and audited."""
    h = await new_holder(db, wallet=0)
    _, client_id, auth = await _key(db, "balance:write")
    into_bucket = {"amount": {"amount": 200, "units": "MB"}, "usageType": "data",
                   "bucket": {"id": str(h.data_bucket)},
                   "partyAccount": {"id": str(h.account_id)}}
    new_bucket = {**into_bucket, "bucket": {"id": "new"},
                  "logicalResource": [{"id": h.line.msisdn}],
                  "amount": {"amount": 2, "units": "GB"}}
    made = []
    for body in (into_bucket, new_bucket):
        r = await client.post(f"{BASE}/topupBalance", json=body, headers=auth)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    for action in made:
        moved = await _moved(db, action)
        assert [t.code for t in moved] == ["tmf_topup"]
        issuance = chart.issuance("DATA_B", chart.shard_of(h.line.id))
        assert moved[0].debit_account_id == issuance.id
    entries = await _audited(db)
    assert [e.after["from"] for e in entries] == ["issuance:DATA_B", "issuance:DATA_B"]
    assert [e.after["amount"] for e in entries] == [200 * MB, 2 * 1024 * MB]
    assert all(e.details["client"] == str(client_id) for e in entries)
    await _balanced(db)


def test_a_maximum_in_no_currency_stops_the_start() -> None:
    with pytest.raises(ValidationError, match="SIMCHARGE_TMF654_TOPUP_MAX_AMOUNTS"):
        Settings(tmf654_topup_max_amounts="XYZ:100")
    with pytest.raises(ValidationError):
        Settings(tmf654_topup_max_minor=0)
    assert Settings().tmf654_topup_max("USD") == 10000
    assert Settings().tmf654_topup_max("PHP") == 560000
