"""An API key's client outlives its rotation (`api_keys.client_id`, migration 0027): the
successor of a rotated key goes on with the charging sessions and the TMF654 idempotency keys
of its predecessor. Before, both were bound to the key's prefix: after `simcharge apikey rotate`
the SMF's updates were 404 and a retransmitted create reserved twice, and a `topupBalance`
replayed with the new key credited twice. Rows stored under the prefix before the deploy still
match."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import httpx
from sqlalchemy import func, select

from simcharge.auth.apikeys import create_api_key, rotate_api_key, staff_rotate_api_key
from simcharge.auth.models import ApiKey
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.charging import nchf as nchf_service
from simcharge.charging.models import ChargingSession
from simcharge.charging.rating import RatingCache
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line
from simcharge.lines.service import UnitGrant
from simcharge.tmf654 import service
from simcharge.tmf654.models import BalanceAction
from tests.charging.helpers import (
    MIB,
    Nchf,
    balances,
    body,
    make_line,
    open_reservations,
    ref_of,
    rg,
)
from tests.factories import create_line
from tests.migration_helpers import fresh_database, migrate_to, opened
from tests.tmf654.helpers import BASE, Holder, new_holder

DATA = 200
HOUR = timedelta(hours=1)


async def _key(db: Database, *scopes: str) -> tuple[str, str]:
    """A new key: its prefix and its token."""
    issued = await db.run(lambda s: create_api_key(s, "crm", list(scopes)))
    return issued.key.prefix, issued.token


async def _rotate(db: Database, prefix: str) -> str:
    """Rotate `prefix` as `simcharge apikey rotate` does: the successor's token."""

    async def run(s: object) -> str:
        rotated = await rotate_api_key(s, prefix)  # type: ignore[arg-type]
        assert rotated is not None
        return rotated.issued.token

    return await db.run(run)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _wallet(db: Database, line_id: uuid.UUID) -> int:
    async with db.read() as s:
        from simcharge.ledger.models import LedgerAccount

        line = await s.get(Line, line_id)
        assert line is not None
        account = await s.get(LedgerAccount, line.wallet_account_id)
        assert account is not None
        return account.credits_posted - account.debits_posted - account.debits_pending


def _topup(h: Holder, amount: float = 5) -> dict[str, object]:
    return {"amount": {"amount": amount, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}


# --- keys ------------------------------------------------------------------------------------


async def test_a_key_is_its_own_client_and_its_successor_inherits_it(db: Database) -> None:
    prefix, _ = await _key(db, "balance:write")
    await _rotate(db, prefix)
    async with db.read() as s:
        old = (await s.execute(select(ApiKey).where(ApiKey.prefix == prefix))).scalar_one()
        chain = (
            await s.execute(select(ApiKey).where(ApiKey.client_id == old.client_id))
        ).scalars().all()
    assert old.client_id == old.id
    assert len(chain) == 2  # the successor too, with its own id


# --- TMF654 idempotency ----------------------------------------------------------------------


async def test_a_topup_replayed_with_the_rotated_key_is_answered_not_credited_again(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db, wallet=1000)
    prefix, old = await _key(db, "balance:write")
    headers = {**_bearer(old), "Idempotency-Key": "t-1"}
    first = await client.post(f"{BASE}/topupBalance", json=_topup(h), headers=headers)
    assert first.status_code == 201, first.text
    new = await _rotate(db, prefix)
    again = await client.post(f"{BASE}/topupBalance", json=_topup(h),
                              headers={**_bearer(new), "Idempotency-Key": "t-1"})
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert await _wallet(db, h.line.id) == 1500
    # The same key with another body is refused for the successor as for the key itself.
    other = await client.post(f"{BASE}/topupBalance", json=_topup(h, 6),
                              headers={**_bearer(new), "Idempotency-Key": "t-1"})
    assert (other.status_code, other.json()["code"]) == (400, "idempotency-key-reused")
    assert await _wallet(db, h.line.id) == 1500


async def test_an_action_stored_under_the_prefix_before_the_deploy_still_replays(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A row written before 0027: its actor the key's `apikey:<prefix>` and its id derived from
    that (no client scope). Replayed after the deploy — by the key, and after its rotation by
    the successor — it is answered, never credited again."""
    from simcharge.lifecycle.service import Policy

    h = await new_holder(db, wallet=1000)
    prefix, old = await _key(db, "balance:write")
    request = _topup(h)

    async def before_the_deploy(s: object) -> BalanceAction:
        line = await s.get(Line, h.line.id, with_for_update=True)  # type: ignore[attr-defined]
        return await service.topup(
            s, line=line, usage_type="monetary", amount=500, target=None,  # type: ignore[arg-type]
            valid_until=None, actor=f"apikey:{prefix}", key="legacy-1", request=request,
            reason=None, policy=Policy.of(settings),
        )

    made = await db.run(before_the_deploy)
    assert made.id == service.action_id(f"apikey:{prefix}", "legacy-1")
    r = await client.post(f"{BASE}/topupBalance", json=request,
                          headers={**_bearer(old), "Idempotency-Key": "legacy-1"})
    assert (r.status_code, r.json()["id"]) == (201, str(made.id))
    new = await _rotate(db, prefix)
    r = await client.post(f"{BASE}/topupBalance", json=request,
                          headers={**_bearer(new), "Idempotency-Key": "legacy-1"})
    assert (r.status_code, r.json()["id"]) == (201, str(made.id))
    assert r.headers["Idempotent-Replayed"] == "true"
    assert await _wallet(db, h.line.id) == 1500


async def test_another_clients_idempotency_key_is_its_own(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db, wallet=0)
    _, one = await _key(db, "balance:write")
    _, two = await _key(db, "balance:write")
    for token in (one, two):
        r = await client.post(f"{BASE}/topupBalance", json=_topup(h),
                              headers={**_bearer(token), "Idempotency-Key": "same"})
        assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    assert await _wallet(db, h.line.id) == 1000


# --- Nchf sessions ---------------------------------------------------------------------------


async def test_a_charging_session_goes_on_with_the_rotated_key(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    prefix, old = await _key(db, "charging")
    smf = Nchf(client, _bearer(old))
    first = body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})])
    created = await smf.create(first)
    assert created.status_code == 201
    ref = ref_of(created)
    rotated = Nchf(client, _bearer(await _rotate(db, prefix)))
    # The create retransmitted with the new key is the same resource, reserved once.
    again = await rotated.create({**first, "retransmissionIndicator": True})
    assert (again.status_code, ref_of(again)) == (201, ref)
    assert await open_reservations(db) == 1
    used = body(t.supi, 1, [rg(DATA, requested={"totalVolume": 10 * MIB},
                               used=[{"totalVolume": MIB}])])
    assert (await rotated.update(ref, used)).status_code == 200
    assert (await smf.update(ref, used)).status_code == 200  # the old key, in its overlap
    assert (await balances(db, t.line)).units[0].remaining == 89 * MIB
    assert (await rotated.release(ref, body(t.supi, 2, [rg(DATA)]))).status_code == 204


async def test_another_clients_key_cannot_touch_the_session(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    _, mine = await _key(db, "charging")
    _, theirs = await _key(db, "charging")
    created = await Nchf(client, _bearer(mine)).create(
        body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})])
    )
    r = await Nchf(client, _bearer(theirs)).update(
        ref_of(created), body(t.supi, 1, [rg(DATA, used=[{"totalVolume": MIB}])])
    )
    assert (r.status_code, r.json()["cause"]) == (404, "CONTEXT_NOT_FOUND")


async def test_a_session_opened_under_the_prefix_before_the_deploy_goes_on(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Opened before 0027 (its ref derived from the key's prefix, its client the prefix) and not
    rewritten (a process of the old release during the rollout): the key's retransmitted
    create finds it, and after a rotation the successor updates it."""
    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    prefix, _ = await _key(db, "charging")
    first = body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})])
    raw = json.dumps(first).encode()

    async def before_the_deploy(s: object) -> nchf_service.NchfAnswer:
        table = await RatingCache(0).get(s)  # type: ignore[arg-type]
        return await nchf_service.create_charging_data(
            s, settings, table, client=prefix, body=raw  # type: ignore[arg-type]
        )

    answer = await db.run(before_the_deploy)
    async with db.read() as s:
        stored = await s.get(ChargingSession, answer.ref)
        assert stored is not None and stored.client == prefix
    rotated = Nchf(client, _bearer(await _rotate(db, prefix)))
    again = await rotated.create(raw)
    assert (again.status_code, ref_of(again)) == (201, str(answer.ref))
    assert await open_reservations(db) == 1
    used = body(t.supi, 1, [rg(DATA, used=[{"totalVolume": MIB}])])
    r = await rotated.update(str(answer.ref), used)
    assert r.status_code == 200, r.text


# --- the migration ---------------------------------------------------------------------------


fresh = fresh_database("keyclient")


async def test_the_migration_gives_chains_one_client_and_moves_open_sessions(fresh: str) -> None:
    actor = Actor(name="staff:admin", permissions=frozenset())
    async with opened(fresh) as db, db.transaction() as s:
        root = (await create_api_key(s, "smf", ["charging"])).key
        middle = (await staff_rotate_api_key(s, actor, root.prefix, overlap=HOUR)).issued.key
        last = (await staff_rotate_api_key(s, actor, middle.prefix, overlap=HOUR)).issued.key
        alone = (await create_api_key(s, "crm", ["charging"])).key
        # A key rotated twice in its overlap (the command line allowed it until the
        # fourteenth round's review), then one of its successors rotated: one chain.
        fork = (await create_api_key(s, "pcf", ["charging"])).key
        forked = []
        for old in (fork.prefix, fork.prefix, None):
            source = old or forked[0].prefix
            made = (await rotate_api_key(s, source, overlap=HOUR)).issued.key  # type: ignore[union-attr]
            await audit.record(s, actor, "apikey.rotate", target_type="api_key",
                               target_id=source, after={"replaced_by": made.prefix})
            forked.append(made)
        line = await create_line(s)
        ids = {k.prefix: k.id for k in (root, middle, last, alone, fork, *forked)}
        line_id = line.id

    await migrate_to(fresh, "0026_audit_target_index")

    now = utcnow()
    sessions = {  # state and client as release 0026 stored them
        uuid.uuid4(): ("open", middle.prefix),
        uuid.uuid4(): ("released", middle.prefix),
        uuid.uuid4(): ("open", alone.prefix),
        uuid.uuid4(): ("open", "gone-key"),
    }
    async with opened(fresh) as db, db.transaction() as s:
        for ref, (state, owner) in sessions.items():
            s.add(ChargingSession(
                id=ref, line_id=line_id, client=owner, subscriber="imsi-1", state=state,
                zone="home", country="US", sequence=0, answers={}, groups={},
                deadline=now + timedelta(hours=1), created_at=now, updated_at=now,
            ))

    await migrate_to(fresh)

    async with opened(fresh) as db, db.read() as s:
        clients = dict((await s.execute(select(ApiKey.prefix, ApiKey.client_id))).all())
        stored = {
            ref: (await s.get(ChargingSession, ref)) for ref in sessions
        }
        nulls = (await s.execute(
            select(func.count()).select_from(ApiKey).where(ApiKey.client_id.is_(None))
        )).scalar_one()
    root_id = ids[root.prefix]
    assert clients[root.prefix] == clients[middle.prefix] == clients[last.prefix] == root_id
    assert clients[alone.prefix] == ids[alone.prefix]
    assert {clients[k.prefix] for k in (fork, *forked)} == {ids[fork.prefix]}
    assert nulls == 0
    owners = {ref: cs.client for ref, cs in stored.items() if cs is not None}
    refs = list(sessions)
    assert owners[refs[0]] == str(root_id)  # open: the client's now
    assert owners[refs[1]] == middle.prefix  # closed: left as it was
    assert owners[refs[2]] == str(ids[alone.prefix])
    assert owners[refs[3]] == "gone-key"  # no such key: nothing to move it to


async def test_the_migration_goes_down_and_up_again(fresh: str) -> None:
    """Down and up again: the column goes and comes back; an open session owned by a client id
    goes back to the newest prefix of its client, then forward again."""
    async with opened(fresh) as db, db.transaction() as s:
        key = (await create_api_key(s, "smf", ["charging"])).key
        line = await create_line(s)
        now = utcnow()
        ref = uuid.uuid4()
        s.add(ChargingSession(
            id=ref, line_id=line.id, client=str(key.client_id), subscriber="imsi-1",
            state="open", zone="home", country="US", sequence=0, answers={}, groups={},
            deadline=now + timedelta(hours=1), created_at=now, updated_at=now,
        ))
    await migrate_to(fresh, "0026_audit_target_index")
    async with opened(fresh) as db, db.read() as s:
        cs = await s.get(ChargingSession, ref)
        assert cs is not None and cs.client == key.prefix
    await migrate_to(fresh)
    async with opened(fresh) as db, db.read() as s:
        cs = await s.get(ChargingSession, ref)
        assert cs is not None and cs.client == str(key.client_id)
