"""Staff suspend a line whose SIM is reported lost or stolen, and resume it (the sixteenth round).

Before, customer service could only unfreeze: nothing stopped a line, and `frozen` would not do
— a top-up reactivates a frozen line, so a thief could pay to use the SIM. A `suspended` line is
denied service by Nchf, still charged for usage that happened (the batch import), credited its
top-ups without being brought back, left alone by the sweep (validity runs, but it is neither
frozen, nor put in grace, nor terminated), and gives or gets no TMF654 transfer. Staff suspend
and resume it with a reason (audited); resuming puts it where the lifecycle's rules do now.
Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from simcharge.app import create_app
from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice.models import AuditEntry
from simcharge.charging.batch import import_usage_records, read_usage_text
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.kit.i18n import LANGUAGES
from simcharge.lifecycle.forecast import Outlook, outlook
from simcharge.lifecycle.jobs import warning_to_send
from simcharge.lifecycle.models import LineEvent
from simcharge.lifecycle.service import Policy, on_topup, sweep
from simcharge.lines.models import Line, LineState
from simcharge.notifications.service import DELIVER
from simcharge.notifications.templates import render
from simcharge.worker.models import OutboxJob
from tests.backoffice.helpers import new_staff
from tests.charging.helpers import MIB, balances, body, make_line, nchf, rg, unit_info
from tests.orders.helpers import new_payer
from tests.tmf654.helpers import BASE, api_key, new_holder

DATA = 200
REASON = "SIM reported stolen by phone, ticket T-4K7Q2M9X"


async def _line(db: Database, line_id: uuid.UUID) -> Line:
    async with db.read() as s:
        line = await s.get(Line, line_id, populate_existing=True)
        assert line is not None
        return line


async def _set(db: Database, line_id: uuid.UUID, **values: Any) -> None:
    await db.run(lambda s: s.execute(update(Line).where(Line.id == line_id).values(**values)))


async def _audit(db: Database, line_id: uuid.UUID) -> list[AuditEntry]:
    async with db.read() as s:
        return list((await s.execute(
            select(AuditEntry).where(AuditEntry.target_id == str(line_id)).order_by(AuditEntry.at)
        )).scalars())  # fmt: skip


async def _events(db: Database, line_id: uuid.UUID) -> list[tuple[str, str, str]]:
    async with db.read() as s:
        rows = (await s.execute(
            select(LineEvent).where(LineEvent.line_id == line_id).order_by(LineEvent.created_at)
        )).scalars()  # fmt: skip
        return [(e.from_state, e.to_state, e.reason) for e in rows]


async def _notices(db: Database, line_id: uuid.UUID) -> list[dict[str, Any]]:
    async with db.read() as s:
        jobs = (await s.execute(select(OutboxJob).where(OutboxJob.kind == DELIVER))).scalars()
        return [j.payload for j in jobs if j.payload.get("line_id") == str(line_id)]


async def _suspend(client: httpx.AsyncClient, line_id: uuid.UUID, auth: dict[str, str],
                   reason: Any = REASON) -> httpx.Response:  # fmt: skip
    return await client.post(
        f"/api/v1/admin/lines/{line_id}/suspend", json={"reason": reason}, headers=auth
    )


async def _resume(client: httpx.AsyncClient, line_id: uuid.UUID, auth: dict[str, str],
                  reason: Any = "SIM found") -> httpx.Response:  # fmt: skip
    return await client.post(
        f"/api/v1/admin/lines/{line_id}/resume", json={"reason": reason}, headers=auth
    )


# --- the API ---------------------------------------------------------------------------------


async def test_an_agent_suspends_and_resumes_a_line_audited_and_the_owner_told(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    await _set(db, payer.line.id, validity_end=utcnow() + timedelta(days=20))
    agent = await new_staff(db, settings, "agent")

    r = await _suspend(client, payer.line.id, agent.auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": str(payer.line.id), "state": "suspended"}
    assert (await _line(db, payer.line.id)).state == LineState.suspended

    # Twice is refused, and changes nothing more.
    again = await _suspend(client, payer.line.id, agent.auth)
    assert again.status_code == 409, again.text
    assert (again.json()["type"], again.json()["field"]) == (
        "/problems/line-already-suspended", "line_id")
    assert payer.line.msisdn in again.json()["detail"]

    r = await _resume(client, payer.line.id, agent.auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": str(payer.line.id), "state": "active"}
    line = await _line(db, payer.line.id)
    assert line.state == LineState.active and line.last_activity_at is not None
    again = await _resume(client, payer.line.id, agent.auth)
    assert (again.status_code, again.json()["type"], again.json()["field"]) == (
        409, "/problems/line-not-suspended", "line_id")

    entries = await _audit(db, payer.line.id)
    assert [(e.action, e.before, e.after, e.details) for e in entries] == [
        ("line.suspend", {"state": "active"}, {"state": "suspended"}, {"reason": REASON}),
        ("line.resume", {"state": "suspended"}, {"state": "active"}, {"reason": "SIM found"}),
    ]
    assert all(e.actor == f"staff:{agent.username}" for e in entries)
    assert all(payer.line.msisdn not in str([e.before, e.after, e.details]) for e in entries)
    assert await _events(db, payer.line.id) == [
        ("active", "suspended", f"suspended: {REASON}"),
        ("suspended", "active", "resumed: SIM found"),
    ]
    told = await _notices(db, payer.line.id)
    assert [(n["template"], n["params"]) for n in told] == [
        ("line.suspended", {"msisdn": payer.line.msisdn}),
        ("line.resumed", {"msisdn": payer.line.msisdn, "state": "active"}),
    ]
    assert all(n["account_id"] == str(payer.account_id) for n in told)


@pytest.mark.parametrize(
    ("reason", "said"),
    [(None, None), ("", "Give a reason."), ("   ", "Give a reason."), ("x" * 501, "500")],
)  # fmt: skip
async def test_a_reason_is_required_and_bounded_nothing_changes_without_one(
    client: httpx.AsyncClient, db: Database, settings: Settings, reason: Any, said: str | None
) -> None:
    payer = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    for call in (_suspend, _resume):
        if call is _resume:
            await _set(db, payer.line.id, state=LineState.suspended.value)
        json = {} if reason is None else {"reason": reason}
        path = "suspend" if call is _suspend else "resume"
        r = await client.post(
            f"/api/v1/admin/lines/{payer.line.id}/{path}", json=json, headers=agent.auth
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        fields = [e["field"] for e in problem.get("errors", [])] or [problem.get("field")]
        assert fields == ["reason"], problem
        if said is not None:
            assert said in r.text
    assert (await _line(db, payer.line.id)).state == LineState.suspended  # as set, unchanged
    assert await _audit(db, payer.line.id) == [] and await _events(db, payer.line.id) == []
    assert await _notices(db, payer.line.id) == []


async def test_a_line_in_stock_or_terminated_is_not_suspended(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    agent = await new_staff(db, settings, "agent")
    for state in (LineState.available, LineState.terminated):
        payer = await new_payer(db, settings, line_state=state)
        r = await _suspend(client, payer.line.id, agent.auth)
        assert r.status_code == 409, r.text
        assert (r.json()["type"], r.json()["field"]) == ("/problems/line-not-in-service", "line_id")
        assert (await _line(db, payer.line.id)).state == state
        assert await _audit(db, payer.line.id) == [] and await _events(db, payer.line.id) == []
        r = await _resume(client, payer.line.id, agent.auth)
        assert (r.status_code, r.json()["type"]) == (409, "/problems/line-not-suspended")
    missing = uuid.uuid4()
    r = await _suspend(client, missing, agent.auth)
    assert (r.status_code, r.json()["field"]) == (404, "line_id")


async def test_who_may_suspend_as_who_may_unfreeze(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    finance = await new_staff(db, settings, "finance")
    r = await _suspend(client, payer.line.id, finance.auth)
    assert r.status_code == 403, r.text
    reader = await db.run(lambda s: create_api_key(s, "crm", ["customers:read"]))
    r = await _suspend(client, payer.line.id, {"Authorization": f"Bearer {reader.token}"})
    assert r.status_code == 403, r.text
    assert (await _line(db, payer.line.id)).state == LineState.active
    tool = await db.run(lambda s: create_api_key(s, "crm", ["accounts:write"]))
    auth = {"Authorization": f"Bearer {tool.token}"}
    r = await _suspend(client, payer.line.id, auth)
    assert (r.status_code, r.json()["state"]) == (200, "suspended"), r.text
    # Resuming is a person's act (tests/backoffice/test_round16_resume_by_a_person.py).
    r = await _resume(client, payer.line.id, auth)
    assert (r.status_code, r.json()["type"]) == (403, "/problems/resume-needs-a-person"), r.text
    assert (await _line(db, payer.line.id)).state == LineState.suspended
    assert [(e.action, e.actor) for e in await _audit(db, payer.line.id)] == [
        ("line.suspend", f"apikey:{tool.key.prefix}"),
        ("access.denied", f"apikey:{tool.key.prefix}"),
    ]


# --- resuming by the lifecycle's rules ---------------------------------------------------------


async def test_resume_puts_the_line_where_the_rules_do(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    agent = await new_staff(db, settings, "agent")
    now = utcnow()
    # Frozen when suspended: frozen again (a suspension unfreezes nothing), its termination
    # period counted from the resume.
    frozen = await new_payer(db, settings)
    await _set(db, frozen.line.id, state=LineState.frozen.value,
               validity_end=now + timedelta(days=30), state_changed_at=now - timedelta(days=80))
    # In grace, its validity ended during the suspension: grace, a full period.
    graced = await new_payer(db, settings)
    await _set(db, graced.line.id, validity_end=now + timedelta(hours=1))
    for p in (frozen, graced):
        assert (await _suspend(client, p.line.id, agent.auth)).status_code == 200
    await _set(db, graced.line.id, validity_end=now - timedelta(days=3))
    r = await _resume(client, frozen.line.id, agent.auth)
    assert r.json()["state"] == "frozen", r.text
    line = await _line(db, frozen.line.id)
    ahead = outlook(line, Policy.of(settings)).terminate_at
    assert ahead is not None and ahead > utcnow() + timedelta(days=settings.lifecycle_termination_days - 1)
    r = await _resume(client, graced.line.id, agent.auth)
    assert r.json()["state"] == "grace", r.text
    # The next sweep leaves both where resume put them.
    await sweep(db, Policy.of(settings), now=utcnow() + timedelta(minutes=10))
    assert (await _line(db, frozen.line.id)).state == LineState.frozen
    assert (await _line(db, graced.line.id)).state == LineState.grace
    [told] = [n for n in await _notices(db, frozen.line.id) if n["template"] == "line.resumed"]
    assert told["params"]["state"] == "frozen"


async def test_without_a_grace_period_a_line_past_its_validity_resumes_frozen(
    db: Database, settings: Settings
) -> None:
    no_grace = settings.model_copy(update={"lifecycle_grace_days": 0})
    payer = await new_payer(db, no_grace)
    agent = await new_staff(db, no_grace, "agent")
    app = create_app(no_grace, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        assert (await _suspend(c, payer.line.id, agent.auth)).status_code == 200
        await _set(db, payer.line.id, validity_end=utcnow() - timedelta(days=1))
        r = await _resume(c, payer.line.id, agent.auth)
    assert r.json()["state"] == "frozen", r.text


# --- while suspended ---------------------------------------------------------------------------


async def test_the_sweep_leaves_a_suspended_line_alone_however_long(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Validity long over, no activity for years, suspended for longer than the frozen line's
    termination period: no rule moves it, no warning goes out; its validity is unchanged."""
    payer = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    assert (await _suspend(client, payer.line.id, agent.auth)).status_code == 200
    long_ago = utcnow() - timedelta(days=3 * 365)
    await _set(db, payer.line.id, validity_end=long_ago, last_activity_at=long_ago,
               state_changed_at=long_ago)  # fmt: skip
    before = len(await _notices(db, payer.line.id))
    report = await sweep(db, Policy.of(settings), now=utcnow() + timedelta(minutes=10))
    assert not any(report.changed.values())
    line = await _line(db, payer.line.id)
    assert line.state == LineState.suspended and line.validity_end is not None
    assert line.validity_end.replace(tzinfo=UTC) == long_ago.replace(tzinfo=UTC)
    assert [e[1] for e in await _events(db, payer.line.id)] == ["suspended"]
    assert len(await _notices(db, payer.line.id)) == before
    # Time alone changes nothing ahead (the portal shows no date), and a warning queued before
    # the suspension is dropped as it goes out.
    assert outlook(line, Policy.of(settings)) == Outlook()
    payload = {"line_id": str(payer.line.id), "template": "line.validity_ending",
               "params": {"msisdn": payer.line.msisdn,
                          "validity_end": (utcnow() + timedelta(days=3)).isoformat()}}
    async with db.read() as s:
        assert await warning_to_send(s, payload, Policy.of(settings), utcnow()) is None


async def test_a_topup_is_credited_and_does_not_resume_the_line(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Whatever the reactivation policy (`topup`, the default, brings a frozen line back)."""
    assert settings.lifecycle_frozen_reactivation == "topup"
    agent = await new_staff(db, settings, "agent")
    headers = await api_key(db, "balance:read", "balance:write")
    for state in (LineState.active, LineState.frozen, LineState.grace):
        holder = await new_holder(db, wallet=0, state=state)
        assert (await _suspend(client, holder.line.id, agent.auth)).status_code == 200
        r = await client.post(f"{BASE}/topupBalance", headers=headers, json={
            "amount": {"amount": 5, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(holder.line.wallet_account_id)},
            "partyAccount": {"id": str(holder.account_id)},
        })  # fmt: skip
        assert r.status_code == 201, r.text
        line = await _line(db, holder.line.id)
        assert line.state == LineState.suspended, state
        assert (await balances(db, line)).wallet.available == 500
        assert [e[1] for e in await _events(db, holder.line.id)] == ["suspended"]


async def test_on_topup_leaves_a_suspended_line_suspended(
    db: Database, settings: Settings
) -> None:
    policy = Policy.of(settings)
    payer = await new_payer(db, settings)
    await _set(db, payer.line.id, state=LineState.suspended.value,
               validity_end=utcnow() - timedelta(days=2))  # fmt: skip

    async def run(s: Any) -> bool:
        line = await s.get(Line, payer.line.id)
        return on_topup(s, line, now=utcnow(), actor="order:x", by_owner=True, policy=policy)

    assert await db.run(run) is False
    assert (await _line(db, payer.line.id)).state == LineState.suspended


async def test_nchf_denies_a_suspended_line_per_rating_group(
    client: httpx.AsyncClient, db: Database
) -> None:
    api = await nchf(client, db)
    t = await make_line(db, money=1000, state="suspended")
    for subscriber in (t.supi, t.gpsi):
        r = await api.create(body(subscriber, 0, [rg(DATA, requested={"totalVolume": MIB})]))
        assert r.status_code == 201, r.text
        assert unit_info(r, DATA)["resultCode"] == "END_USER_SERVICE_DENIED"
    assert (await balances(db, t.line)).wallet.available == 1000


async def test_the_batch_import_charges_usage_that_happened(
    db: Database, settings: Settings
) -> None:
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    t = await make_line(db, money=500, state="suspended")
    text = "id,subscriber,service,quantity,started_at,country\n" + (
        f"s1,{t.gpsi},sms,1,{at.strftime('%Y-%m-%dT%H:%M:%SZ')},\n"
    )
    clock.freeze(at + timedelta(hours=1))
    try:
        report = await import_usage_records(db, settings, read_usage_text(text, "u.csv"))
    finally:
        clock.unfreeze()
    assert (report.accepted, report.rejected) == (1, 0), report.errors
    assert (await balances(db, t.line)).wallet.available == 495
    assert (await _line(db, t.line.id)).state == LineState.suspended


async def test_tmf654_treats_a_suspended_line_as_frozen_for_transfers_and_reservations(
    client: httpx.AsyncClient, db: Database
) -> None:
    headers = await api_key(db, "balance:read", "balance:write")
    giver = await new_holder(db)
    gone = await new_holder(db, state=LineState.suspended)

    def give(frm: Any, to: Any) -> dict[str, Any]:
        return {"reason": "gift", "channel": {"id": "crm", "name": "crm"},
                "logicalResource": [{"id": frm.line.msisdn}],
                "receiverLogicalResource": {"id": to.line.msisdn},
                "amount": {"amount": 1, "units": "USD"}, "usageType": "monetary",
                "bucket": {"id": str(frm.line.wallet_account_id)},
                "receiverBucket": {"id": "new"}, "receiverBucketUsageType": "monetary"}

    for frm, to, field in ((gone, giver, "logicalResource"),
                           (giver, gone, "receiverLogicalResource")):  # fmt: skip
        r = await client.post(f"{BASE}/transferBalance", json=give(frm, to), headers=headers)
        assert (r.status_code, r.json()["code"], r.json()["field"]) == (
            409, "line-not-in-service", field), r.text
    reserve = {"amount": {"amount": 0.5, "units": "USD"}, "usageType": "monetary",
               "bucket": {"id": str(gone.line.wallet_account_id)},
               "partyAccount": {"id": str(gone.account_id)}}
    r = await client.post(f"{BASE}/reserveBalance", json=reserve, headers=headers)
    assert (r.status_code, r.json()["code"]) == (409, "line-not-in-service"), r.text
    async with db.read() as s:
        count = await s.scalar(select(func.count()).select_from(LineEvent))
    assert count == 0


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_owner_s_notices_render_in_every_language(language: str) -> None:
    base = {"msisdn": "+14155550101", "operator": "simcharge"}
    suspended = render("line.suspended", language, base)
    assert "+14155550101" in suspended.subject and "+14155550101" in suspended.sms
    for state in ("active", "grace", "frozen"):
        resumed = render("line.resumed", language, {**base, "state": state})
        assert "+14155550101" in resumed.text and resumed.sms
