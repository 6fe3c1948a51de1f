"""Round 16 (DPO review): TMF654's reads — buckets, totals, top-ups, adjustments, reservations,
transfers and the history, listed or one by one — are audited as the back office's reads are.

A list is ONE entry per request, whatever the number of lines it read (`balance.list`): the
resource, the filter asked (`by`), the lines read by id, how many items were found; its target
is the account for `partyAccount.id`, the line for a number alone. One item is `balance.view`
on its line. By `apikey:<prefix>` with the key's client; never the number typed. A refused or
failed read records nothing; a write records its own entry only (as before)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from simcharge.backoffice.models import AuditEntry
from simcharge.db import Database
from tests.tmf654.helpers import BASE, api_key, new_holder


async def _entries(db: Database) -> list[AuditEntry]:
    async with db.read() as s:
        return list(
            (await s.execute(select(AuditEntry).order_by(AuditEntry.at, AuditEntry.id))).scalars()
        )


async def _count(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


async def _actor(db: Database, headers: dict[str, str]) -> tuple[str, str]:
    from simcharge.auth.models import ApiKey

    prefix = headers["Authorization"].split("_")[1]
    async with db.read() as s:
        key = (await s.execute(select(ApiKey).where(ApiKey.prefix == prefix))).scalar_one()
    return f"apikey:{prefix}", str(key.client_id)


def _plain(entry: AuditEntry) -> tuple[Any, ...]:
    return entry.actor, entry.action, entry.target_type, entry.target_id


async def test_a_list_is_one_entry_naming_its_filter_never_the_number(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    headers = await api_key(db, "balance:read")
    actor, client_id = await _actor(db, headers)
    before = await _count(db)
    for path in ("bucket", "accumulatedBalance", "topupBalance", "adjustBalance",
                 "reserveBalance", "transferBalance", "balanceActionHistory"):
        r = await client.get(f"{BASE}/{path}", params={"logicalResource.id": h.line.msisdn},
                             headers=headers)
        assert r.status_code == 200, (path, r.text)
    entries = (await _entries(db))[before:]
    assert [_plain(e) for e in entries] == [
        (actor, "balance.list", "line", str(h.line.id))
    ] * 7
    assert [e.details["resource"] for e in entries] == [
        "bucket", "accumulatedBalance", "topupBalance", "adjustBalance", "reserveBalance",
        "transferBalance", "balanceActionHistory",
    ]
    first = entries[0].details
    assert first == {
        "resource": "bucket", "by": ["logicalResource.id"], "lines": [str(h.line.id)],
        "found": 3, "client": client_id,  # the wallet and two buckets
    }
    for e in entries:
        assert h.line.msisdn not in str(e.details)
        assert h.line.msisdn.lstrip("+") not in str(e.details)


async def test_a_list_of_an_accounts_lines_targets_the_account(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    headers = await api_key(db, "balance:read")
    actor, _ = await _actor(db, headers)
    r = await client.get(f"{BASE}/bucket", params={"partyAccount.id": str(h.account_id)},
                         headers=headers)
    assert r.status_code == 200 and len(r.json()) == 3
    last = (await _entries(db))[-1]
    assert _plain(last) == (actor, "balance.list", "account", str(h.account_id))
    assert last.details["by"] == ["partyAccount.id"]
    assert last.details["lines"] == [str(h.line.id)]
    # Both filters, the line not the account's: nothing found, recorded all the same (the
    # request read whether it was), with no target.
    other = await new_holder(db)
    r = await client.get(
        f"{BASE}/bucket",
        params={"partyAccount.id": str(h.account_id), "logicalResource.id": other.line.msisdn},
        headers=headers,
    )
    assert r.status_code == 200 and r.json() == []
    last = (await _entries(db))[-1]
    assert _plain(last) == (actor, "balance.list", None, None)
    assert last.details["lines"] == [] and last.details["found"] == 0


async def test_one_item_is_one_entry_on_its_line(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    writer = await api_key(db, "balance:write")
    headers = await api_key(db, "balance:read")
    actor, client_id = await _actor(db, headers)
    made = await client.post(f"{BASE}/topupBalance", headers=writer, json={
        "usageType": "monetary", "amount": {"amount": 1, "units": "USD"},
        "logicalResource": [{"id": h.line.msisdn}], "bucket": {"id": str(h.line.wallet_account_id)},
        "partyAccount": {"id": str(h.account_id)},
    })
    assert made.status_code == 201, made.text
    topup = made.json()["id"]
    before = await _count(db)
    reads = [
        ("bucket", str(h.data_bucket)),
        ("accumulatedBalance", f"{h.line.id}.data"),
        ("topupBalance", topup),
        ("balanceActionHistory", topup),
    ]
    for path, item in reads:
        r = await client.get(f"{BASE}/{path}/{item}", headers=headers)
        assert r.status_code == 200, (path, r.text)
    entries = (await _entries(db))[before:]
    assert [_plain(e) for e in entries] == [
        (actor, "balance.view", "line", str(h.line.id))
    ] * len(reads)
    assert [(e.details["resource"], e.details["id"]) for e in entries] == reads
    assert entries[0].details["account_id"] == str(h.account_id)
    assert entries[0].details["client"] == client_id


async def test_refused_and_failed_reads_record_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db)
    headers = await api_key(db, "balance:read")
    wrong = await api_key(db, "lines:read")
    before = await _count(db)
    cases = [
        (f"{BASE}/bucket", {}, headers, 400, "logicalResource.id"),
        (f"{BASE}/bucket", {"logicalResource.id": "+14155550999"}, headers, 404,
         "logicalResource.id"),
        (f"{BASE}/bucket", {"logicalResource.id": h.line.msisdn, "sort": "x"}, headers, 400,
         "sort"),
        (f"{BASE}/bucket", {"logicalResource.id": h.line.msisdn, "limit": "0"}, headers, 400,
         "limit"),
        (f"{BASE}/bucket/{uuid.uuid4()}", {}, headers, 404, "id"),
        (f"{BASE}/accumulatedBalance/{h.line.id}.nothing", {}, headers, 404, "id"),
        (f"{BASE}/topupBalance/{uuid.uuid4()}", {}, headers, 404, "id"),
        (f"{BASE}/balanceActionHistory/not-an-id", {}, headers, 404, "id"),
        (f"{BASE}/bucket", {"logicalResource.id": h.line.msisdn}, {}, 401, None),
        (f"{BASE}/bucket", {"logicalResource.id": h.line.msisdn}, wrong, 403, None),
    ]
    for url, params, given, status, field in cases:
        r = await client.get(url, params=params, headers=given)
        assert r.status_code == status, (url, params, r.text)
        body = r.json()
        assert body["@type"] == "Error"
        if field is not None:
            assert body["field"] == field, (url, body)
    assert await _count(db) == before


async def test_a_write_records_no_read(client: httpx.AsyncClient, db: Database) -> None:
    h = await new_holder(db)
    writer = await api_key(db, "balance:write")
    before = await _count(db)
    made = await client.post(f"{BASE}/topupBalance", headers=writer, json={
        "usageType": "monetary", "amount": {"amount": 1, "units": "USD"},
        "logicalResource": [{"id": h.line.msisdn}], "bucket": {"id": str(h.line.wallet_account_id)},
        "partyAccount": {"id": str(h.account_id)},
    })
    assert made.status_code == 201, made.text
    actions = [e.action for e in (await _entries(db))[before:]]
    assert "balance.list" not in actions and "balance.view" not in actions
