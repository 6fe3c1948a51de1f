"""Payment notifications that matched no order, before finance (round 15).

What was missing: a provider's paid notification for a reference no order has (money taken,
nothing credited) and refund or dispute news whose payment never became known are kept in
`provider_events` with the outcome `unmatched`, but finance had nowhere to see them — the README
gave a SQL query. Now they are the "Payments matching no order" tab of the payments needing
attention (`/backoffice/attention/unmatched`) and `GET /api/v1/admin/provider-events`, newest
first, paged, with what the provider reported about the money and nothing of the payer; finance
marks one settled with a note (audited), and it leaves the list.

The notifications are delivered as the sandbox signs them (a real signature) to the real
webhook; the refund news is given up after `UNMATCHED_PATIENCE` as reconciliation does."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice import provider_events
from simcharge.backoffice.models import AuditEntry, StaffUser
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.kit.moments import moment_text
from simcharge.orders.models import ProviderEvent
from simcharge.payments import webhooks
from tests.backoffice.helpers import csrf_of, new_staff, web_sign_in
from tests.orders.helpers import signed_event

API = "/api/v1/admin/provider-events"
PAGE = "/backoffice/attention/unmatched"
PAYER = "payer-secret@example.com"
"""Put in each notification's payload: never shown."""


def _payment(reference: str, **change: Any) -> dict[str, Any]:
    """A sandbox payment object for an order this database never had (with a payer's e-mail,
    as a provider's notification carries one)."""
    return {
        "id": f"sbx_{uuid.uuid4().hex[:16]}", "reference": reference, "amount": 2000,
        "currency": "USD", "state": "paid", "refunded": 0, "merchant": "sandbox-merchant",
        "paid_at": utcnow().isoformat(), "payer_email": PAYER, **change,
    }  # fmt: skip


def _reference() -> str:
    return f"T{uuid.uuid4().hex[:12].upper()}"


async def _deliver(client: httpx.AsyncClient, settings: Settings, kind: str,
                   obj: dict[str, Any]) -> str:
    # signed at the (frozen, advanced) clock's time: the sandbox refuses a stale signature
    body, headers = signed_event(settings, kind, obj, at=int(utcnow().timestamp()))
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200, r.text
    return str(json.loads(body)["id"])


async def _row(db: Database, event_id: str) -> ProviderEvent:
    async with db.read() as s:
        return (await s.execute(select(ProviderEvent).where(
            ProviderEvent.provider == "sandbox", ProviderEvent.event_id == event_id))).scalar_one()


async def _unmatched_paid(client: httpx.AsyncClient, db: Database, settings: Settings,
                          **change: Any) -> tuple[ProviderEvent, dict[str, Any]]:
    obj = _payment(_reference(), **change)
    event_id = await _deliver(client, settings, "payment.succeeded", obj)
    row = await _row(db, event_id)
    assert row.outcome == "unmatched"
    return row, obj


async def _entries(db: Database, action: str) -> list[AuditEntry]:
    async with db.read() as s:
        return list((await s.execute(select(AuditEntry).where(AuditEntry.action == action)
                                     .order_by(AuditEntry.at))).scalars())


async def test_finance_sees_them_newest_first_with_what_was_reported_and_no_payer_data(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    clock.freeze(utcnow())
    older, older_obj = await _unmatched_paid(client, db, settings)
    # refund news for a payment never known: given up as unmatched after a day
    refund_obj = _payment(_reference(), refund_id="rf-gone", refund_amount=500)
    refund_event = await _deliver(client, settings, "refund.succeeded", refund_obj)
    assert (await _row(db, refund_event)).outcome is None  # still waiting for its payment
    clock.advance(seconds=int(webhooks.UNMATCHED_PATIENCE.total_seconds()) + 60)
    refund_row = await _row(db, refund_event)
    assert await webhooks.process_event(db, app.state.providers.lifecycle,
                                        refund_row.id) == "unmatched"
    clock.advance(seconds=60)
    newer, newer_obj = await _unmatched_paid(client, db, settings, amount=1234, currency="EUR")
    # an ignored notification (a failure took no money) is not listed
    await _deliver(client, settings, "payment.failed", _payment(_reference(), state="failed"))

    finance = await new_staff(db, settings, "finance")
    r = await client.get(API, headers=finance.auth)
    assert r.status_code == 200, r.text
    assert r.headers["x-total-count"] == "3"
    found = r.json()
    assert [e["event_id"] for e in found] == [newer.event_id, refund_event, older.event_id]
    first = found[0]
    assert first == {
        "id": str(newer.id), "provider": "sandbox", "event_id": newer.event_id,
        "event_type": "payment.succeeded", "received_at": first["received_at"],
        "outcome": "unmatched", "reported": "payment", "reference": newer_obj["reference"],
        "payment_id": newer_obj["id"], "amount": 1234, "currency": "EUR",
    }  # fmt: skip
    assert found[1]["reported"] == "refund" and found[1]["amount"] == 500
    assert found[1]["reference"] == refund_obj["reference"]
    assert PAYER not in r.text and "payload" not in r.text and "merchant" not in r.text
    [read] = await _entries(db, "provider_event.list")
    assert read.actor == f"staff:{finance.username}"
    assert read.details == {"outcome": "unmatched", "provider": None, "found": 3}

    # the page, in the member's own zone
    async def in_zone(s: Any) -> None:
        await s.execute(update(StaffUser).where(StaffUser.id == finance.id)
                        .values(time_zone="Asia/Manila"))

    await db.run(in_zone)
    await web_sign_in(client, finance)
    page = await client.get(PAGE)
    assert page.status_code == 200, page.text
    html = page.text
    assert 'aria-current="page">Payments matching no order (3)' in html
    for row, obj in ((newer, newer_obj), (older, older_obj)):
        assert f'id="event-{row.id}"' in html and obj["reference"] in html and obj["id"] in html
    assert "€12.34" in html and "$20.00" in html
    shown = moment_text("en", newer.received_at, None, "Asia/Manila")
    assert shown.endswith("UTC+08:00") and shown in html
    assert html.index(newer.event_id) < html.index(refund_event) < html.index(older.event_id)
    assert PAYER not in html
    # the attention page's tabs lead there
    attention = await client.get("/backoffice/attention")
    assert f'href="{PAGE}"' in attention.text


async def test_pages_of_them_and_a_provider_of_them(
    client: httpx.AsyncClient, db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.freeze(utcnow())
    rows = []
    for _ in range(3):
        rows.append((await _unmatched_paid(client, db, settings))[0])
        clock.advance(seconds=5)
    newest_first = [r.event_id for r in reversed(rows)]
    admin = await new_staff(db, settings, "admin")
    r = await client.get(API, headers=admin.auth, params={"limit": 2})
    assert [e["event_id"] for e in r.json()] == newest_first[:2]
    assert r.headers["x-total-count"] == "3"
    r = await client.get(API, headers=admin.auth, params={"limit": 2, "offset": 2})
    assert [e["event_id"] for e in r.json()] == newest_first[2:]
    r = await client.get(API, headers=admin.auth, params={"provider": "sandbox", "limit": 500})
    assert r.headers["x-total-count"] == "3"
    r = await client.get(API, headers=admin.auth, params={"provider": "stripe"})
    assert r.json() == [] and r.headers["x-total-count"] == "0"

    monkeypatch.setattr(provider_events, "PAGE", 2)
    await web_sign_in(client, admin)
    first = await client.get(PAGE)
    assert newest_first[0] in first.text and newest_first[2] not in first.text
    older = re.search(r'<a rel="next" href="([^"]+)"', first.text)
    assert older and 'rel="prev"' not in first.text
    second = await client.get(older.group(1).replace("&amp;", "&"))
    assert newest_first[2] in second.text and newest_first[0] not in second.text
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
    assert "3–3 of 3" in second.text
    stripe = await client.get(PAGE, params={"provider": "stripe"})
    assert "None." in stripe.text and newest_first[0] not in stripe.text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "1000001"}, "offset"),
        ({"offset": str(2**63)}, "offset"),
        ({"outcome": "ignored"}, "outcome"),
        ({"provider": "visa"}, "provider"),
        ({"provider": "s" * 17}, "provider"),
    ],
)
async def test_bad_input_is_refused_naming_its_field(
    client: httpx.AsyncClient, db: Database, settings: Settings, params: dict[str, str],
    field: str,
) -> None:
    finance = await new_staff(db, settings, "finance")
    r = await client.get(API, headers=finance.auth, params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "/problems/validation-error"
    assert field in json.dumps(r.json().get("errors", r.json()))
    assert not await _entries(db, "provider_event.list")  # nothing read, nothing audited


async def test_agents_and_keys_of_other_scopes_are_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    row, _ = await _unmatched_paid(client, db, settings)
    agent = await new_staff(db, settings, "agent")
    r = await client.get(API, headers=agent.auth)
    assert r.status_code == 403 and r.json()["type"] == "/problems/forbidden"
    r = await client.post(f"{API}/{row.id}/settle", headers=agent.auth, json={"note": "x"})
    assert r.status_code == 403
    csrf = await web_sign_in(client, agent)
    page = await client.get(PAGE)
    assert page.status_code == 403 and "You are not allowed to do this." in page.text
    r = await client.post(f"/backoffice/provider-events/{row.id}/settle",
                          data={"csrf": csrf, "note": "x"})
    assert r.status_code == 403
    attention = await client.get("/backoffice/attention")
    assert attention.status_code == 200 and f'href="{PAGE}"' not in attention.text

    reader = await db.run(lambda s: create_api_key(s, "books", ["reports:read"]))
    key = {"Authorization": f"Bearer {reader.token}"}
    r = await client.get(API, headers=key)
    assert r.status_code == 200 and r.json()[0]["event_id"] == row.event_id
    # settling is a person's judgement: no key settles
    r = await client.post(f"{API}/{row.id}/settle", headers=key, json={"note": "refunded"})
    assert r.status_code == 403
    # since the sixteenth round an `orders:read` key reads them too (`unmatched.read`), and
    # settles none; `customers:read`, which also sees payments needing attention, does not
    orders = await db.run(lambda s: create_api_key(s, "orders", ["orders:read"]))
    r = await client.get(API, headers={"Authorization": f"Bearer {orders.token}"})
    assert r.status_code == 200 and r.json()[0]["event_id"] == row.event_id
    r = await client.post(f"{API}/{row.id}/settle", json={"note": "refunded"},
                          headers={"Authorization": f"Bearer {orders.token}"})
    assert r.status_code == 403
    customers = await db.run(lambda s: create_api_key(s, "people", ["customers:read"]))
    r = await client.get(API, headers={"Authorization": f"Bearer {customers.token}"})
    assert r.status_code == 403
    assert (await _row(db, row.event_id)).outcome == "unmatched"


async def test_finance_settles_one_with_a_note_and_it_leaves_the_list(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    row, obj = await _unmatched_paid(client, db, settings)
    other, _ = await _unmatched_paid(client, db, settings)
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, finance)
    page = await client.get(PAGE)
    assert f'action="/backoffice/provider-events/{row.id}/settle"' in page.text
    url = f"/backoffice/provider-events/{row.id}/settle"
    form = f"settle-{row.id}"

    # without the CSRF token: refused, nothing changed
    r = await client.post(url, data={"note": "refunded at the provider"})
    assert r.status_code == 403
    # without a note: the page again, the note marked, nothing changed
    r = await client.post(url, data={"csrf": csrf, "note": "  "})
    assert r.status_code == 422 and "Payments matching no order" in r.text
    assert f'id="{form}-note-error">Give a reason.' in r.text
    assert 'aria-invalid="true"' in r.text
    assert (await _row(db, row.event_id)).outcome == "unmatched"
    assert not await _entries(db, "provider_event.settle")

    r = await client.post(url, data={"csrf": csrf, "note": "Refunded at the provider, RF-1"})
    assert r.status_code == 303 and r.headers["location"] == f"{PAGE}?done=resolved"
    assert (await _row(db, row.event_id)).outcome == "unmatched_settled"
    [entry] = await _entries(db, "provider_event.settle")
    assert entry.actor == f"staff:{finance.username}"
    assert (entry.target_type, entry.target_id) == ("provider_event", str(row.id))
    assert entry.before == {"outcome": "unmatched"}
    assert entry.after == {"outcome": "unmatched_settled"}
    assert entry.details["note"] == "Refunded at the provider, RF-1"
    assert entry.details["reference"] == obj["reference"]
    assert entry.details["payment_id"] == obj["id"]
    assert PAYER not in json.dumps(entry.details)

    listed = await client.get(f"{PAGE}?done=resolved")
    assert "Marked as resolved." in listed.text
    assert row.event_id not in listed.text and other.event_id in listed.text
    r = await client.get(API, headers=finance.auth)
    assert [e["event_id"] for e in r.json()] == [other.event_id]
    r = await client.get(API, headers=finance.auth, params={"outcome": "unmatched_settled"})
    assert [e["event_id"] for e in r.json()] == [row.event_id]
    assert r.json()[0]["outcome"] == "unmatched_settled"

    # again: nothing to settle (the page's error page; the API's 409)
    page = await client.get(PAGE)
    r = await client.post(url, data={"csrf": csrf_of(page.text), "note": "again"})
    assert r.status_code == 409
    assert len(await _entries(db, "provider_event.settle")) == 1


async def test_settling_through_the_api(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    row, _ = await _unmatched_paid(client, db, settings)
    ignored_id = await _deliver(client, settings, "payment.failed",
                                _payment(_reference(), state="failed"))
    ignored = await _row(db, ignored_id)
    admin = await new_staff(db, settings, "admin")
    url = f"{API}/{row.id}/settle"
    for body, field in (({"note": ""}, "note"), ({"note": "x" * 501}, "note"), ({}, "note"),
                        ({"note": "ok", "extra": 1}, "extra")):
        r = await client.post(url, headers=admin.auth, json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in r.text
    r = await client.post(f"{API}/{uuid.uuid4()}/settle", headers=admin.auth, json={"note": "x"})
    assert r.status_code == 404
    r = await client.post(f"{API}/{ignored.id}/settle", headers=admin.auth, json={"note": "x"})
    assert r.status_code == 409 and r.json()["type"] == "/problems/nothing-to-settle"
    assert (await _row(db, ignored_id)).outcome == "ignored"
    assert not await _entries(db, "provider_event.settle")

    r = await client.post(url, headers=admin.auth, json={"note": "Credited by adjustment"})
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "unmatched_settled" and r.json()["id"] == str(row.id)
    r = await client.post(url, headers=admin.auth, json={"note": "again"})
    assert r.status_code == 409
    [entry] = await _entries(db, "provider_event.settle")
    assert entry.details["note"] == "Credited by adjustment"


async def test_an_event_still_waiting_for_its_payment_is_neither_listed_nor_settled(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Refund news within `UNMATCHED_PATIENCE` is not given up yet (its payment may still
    become known and adopt it): not before finance."""
    clock.freeze(utcnow())
    event_id = await _deliver(client, settings, "refund.succeeded",
                              _payment(_reference(), refund_id="rf-x", refund_amount=100))
    row = await _row(db, event_id)
    assert row.processed_at is None
    admin = await new_staff(db, settings, "admin")
    r = await client.get(API, headers=admin.auth)
    assert r.json() == []
    r = await client.post(f"{API}/{row.id}/settle", headers=admin.auth, json={"note": "x"})
    assert r.status_code == 409
    clock.advance(seconds=int(timedelta(minutes=1).total_seconds()))
