"""A refused back-office form comes back in place (`backoffice/forms.py`).

What was missing: a form refused for its input or a business rule (a bad amount, a refund over
what is left, an empty reply, an unknown role, a job discarded without a reason, a catalog code
that cannot be one, an adjustment already decided…) led to a separate error page: the staff
member went back and typed it all again.

Now the same screen comes back, with the refusal's status (422, 409; 400 for a form without its
one-time key), the error summary on top (focused: `autofocus`), the offending field marked
(`aria-invalid`, `aria-describedby` to its message beside it), what was typed kept, nothing
written, and the page's one-time key kept so that the corrected submit is made, once. A refusal
that is not about the form (nothing there, a page the staff member may not see) keeps the error
page.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from simcharge.auth.apikeys import create_api_key
from simcharge.auth.models import ApiKey
from simcharge.backoffice.models import Adjustment, AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.models import Refund
from simcharge.tickets.models import TicketMessage
from simcharge.worker.models import JobStatus, OutboxJob
from tests.backoffice.helpers import adjust_key_of, csrf_of, new_staff, web_sign_in
from tests.backoffice.test_customers_and_money import _paid
from tests.orders.helpers import new_payer
from tests.tmf654.helpers import new_holder, totals


def field_marked(html: str, form: str, name: str, said: str) -> None:
    """The field `<form>-<name>` is marked invalid, points at its message, which says `said`;
    the summary on top links to it and has the focus."""
    control = re.search(rf'<[a-z]+ [^>]*id="{re.escape(form)}-{name}"[^>]*>', html)
    assert control, f"no field {form}-{name}"
    assert 'aria-invalid="true"' in control.group(0)
    assert f'aria-describedby="{form}-{name}-error"' in control.group(0)
    message = re.search(rf'<p class="field-error" id="{re.escape(form)}-{name}-error">([^<]*)</p>',
                        html)
    assert message and said in message.group(1), html
    summary = html.split('class="flash error error-summary"')[1].split("</div>")[0]
    assert 'role="alert"' in summary and "autofocus" in summary
    assert f'href="#{form}-{name}"' in summary


def error_page(html: str) -> bool:
    return 'href="/backoffice">' in html and "Back to the back office" in html


async def _count(db: Database, model: Any, *where: Any) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(model).where(*where)))
                   .scalar_one())


async def test_a_refused_adjustment_comes_back_on_the_customer_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    holder = await new_holder(db)
    line = holder.line
    agent = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{holder.account_id}")
    key = adjust_key_of(page.text, line.id)
    url = f"/backoffice/lines/{line.id}/adjust"
    form = f"adjust-{line.id}"
    typed = {"csrf": csrf, "target": "wallet", "amount": "1,2,3", "reason": "goodwill <3",
             "idem": key}
    r = await client.post(url, data=typed)
    assert r.status_code == 422 and not r.history
    assert f'action="{url}"' in r.text and not error_page(r.text)  # the customer's page
    field_marked(r.text, form, "amount", "This is not a valid amount.")
    assert 'value="1,2,3"' in r.text and 'value="goodwill &lt;3"' in r.text
    assert adjust_key_of(r.text, line.id) == key  # the one-time key is still the page's
    # a missing reason: that field, what was typed in the other kept
    r = await client.post(url, data={**typed, "amount": "1.50", "reason": " "})
    assert r.status_code == 422
    field_marked(r.text, form, "reason", "Give a reason.")
    assert 'value="1.50"' in r.text
    assert await _count(db, Adjustment, Adjustment.line_id == line.id) == 0
    assert await totals(db, line.wallet_account_id) == (2000, 0)
    # corrected, with the same key: made, once
    for _ in range(2):
        r = await client.post(url, data={**typed, "amount": "1.50"})
        assert r.status_code == 303, r.text
    assert await _count(db, Adjustment, Adjustment.line_id == line.id) == 1
    assert await totals(db, line.wallet_account_id) == (2150, 0)
    # a bucket chosen stays chosen
    r = await client.post(url, data={**typed, "target": str(holder.data_bucket),
                                     "idem": uuid.uuid4().hex})
    assert r.status_code == 422
    assert f'<option value="{holder.data_bucket}" selected>' in r.text


async def test_a_form_without_its_one_time_key_gets_a_fresh_one(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    holder = await new_holder(db)
    agent = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, agent)
    r = await client.post(f"/backoffice/lines/{holder.line.id}/adjust", data={
        "csrf": csrf, "target": "wallet", "amount": "1", "reason": "goodwill"})
    assert r.status_code == 400 and "Idempotency-Key" in r.text
    fresh = adjust_key_of(r.text, holder.line.id)
    assert fresh.endswith(f"-{holder.line.id}") and len(fresh) > len(str(holder.line.id)) + 1
    r = await client.post(f"/backoffice/lines/{holder.line.id}/adjust", data={
        "csrf": csrf, "target": "wallet", "amount": "1", "reason": "goodwill", "idem": fresh})
    assert r.status_code == 303


async def test_a_refused_refund_comes_back_where_it_was_asked(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer)
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, finance)
    customer = f"/backoffice/customers/{payer.account_id}"
    url = f"/backoffice/orders/{order['id']}/refund"
    form = f"refund-{order['id']}"
    typed = {"csrf": csrf, "amount": "9999", "reason": "too much", "then": customer,
             "idem": f"page-{order['id']}"}
    r = await client.post(url, data=typed)
    assert r.status_code == 422 and not error_page(r.text)
    field_marked(r.text, form, "amount", "At most")
    assert 'value="9999"' in r.text and 'value="too much"' in r.text
    assert f'name="idem" value="page-{order["id"]}"' in r.text
    assert await _count(db, Refund, Refund.order_id == uuid.UUID(order["id"])) == 0
    # the corrected refund, under the page's key, is made once
    for _ in range(2):
        r = await client.post(url, data={**typed, "amount": "1.00"})
        assert r.headers["location"] == f"{customer}?done=refund_pending#order-{order['id']}"
    assert await _count(db, Refund, Refund.order_id == uuid.UUID(order["id"])) == 1
    # the key with another amount: in place too, naming the key's problem in the summary
    r = await client.post(url, data={**typed, "amount": "2.00"})
    assert r.status_code == 422 and "already used with a different request" in r.text
    assert not error_page(r.text) and f'href="#{form}-idem"' not in r.text  # said, not linked
    # the same refusal asked from the payments needing attention: that page again
    r = await client.post(url, data={**typed, "then": "/backoffice/attention",
                                     "idem": uuid.uuid4().hex})
    assert r.status_code == 422 and "<h1 id=\"title\">Payments needing attention" in r.text
    # from a page that draws no form again (or one not the back office's): the error page
    for then in ("/backoffice", "https://elsewhere.example/", ""):
        r = await client.post(url, data={**typed, "then": then, "idem": uuid.uuid4().hex})
        assert r.status_code == 422 and error_page(r.text), then
    assert await _count(db, Refund, Refund.order_id == uuid.UUID(order["id"])) == 1


async def test_what_is_not_about_the_form_keeps_the_error_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    customer = f"/backoffice/customers/{payer.account_id}"
    nothing = uuid.uuid4()
    for url, data in (
        (f"/backoffice/orders/{nothing}/refund",
         {"amount": "1", "reason": "x", "idem": "k", "then": customer}),
        (f"/backoffice/lines/{nothing}/adjust",
         {"target": "wallet", "amount": "1", "reason": "x", "idem": "k"}),
        (f"/backoffice/orders/{nothing}/resolve", {"note": "x", "then": customer}),
        (f"/backoffice/jobs/{nothing}/retry", {}),
    ):
        r = await client.post(url, data={"csrf": csrf, **data})
        assert r.status_code == 404 and error_page(r.text), url
    # a page the staff member may not see is not drawn for them by a refusal either
    agent = await new_staff(db, settings, "agent")  # agents may not refund
    client.cookies.clear()
    csrf = await web_sign_in(client, agent)
    r = await client.post(f"/backoffice/orders/{nothing}/refund", data={"csrf": csrf})
    assert r.status_code == 403 and error_page(r.text)


async def test_a_refusal_by_the_state_of_things_comes_back_as_a_conflict(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    holder = await new_holder(db)
    agent = await new_staff(db, settings, "agent")
    finance = await new_staff(db, settings, "finance")
    big = {"target": "wallet", "amount": 500_000, "reason": "paid twice"}
    r = await client.post(f"/api/v1/admin/lines/{holder.line.id}/adjustments", json=big,
                          headers={**agent.auth, "Idempotency-Key": "big"})
    assert r.status_code == 201 and r.json()["state"] == "awaiting_approval", r.text
    adjustment = r.json()["id"]
    csrf = await web_sign_in(client, finance)
    url = f"/backoffice/adjustments/{adjustment}/approve"
    assert (await client.post(url, data={"csrf": csrf})).status_code == 303
    r = await client.post(f"/backoffice/adjustments/{adjustment}/reject", data={"csrf": csrf})
    assert r.status_code == 409 and not error_page(r.text)
    assert "Adjustments awaiting approval" in r.text
    assert "This adjustment was already approved or rejected." in r.text
    async with db.read() as s:
        row = await s.get(Adjustment, uuid.UUID(adjustment))
        assert row is not None and row.state == "applied"
    # an account that is not locked, a line that is not frozen: the customer's page, 409
    client.cookies.clear()
    csrf = await web_sign_in(client, agent)
    r = await client.post(f"/backoffice/customers/{holder.account_id}/unlock",
                          data={"csrf": csrf})
    assert r.status_code == 409 and not error_page(r.text)
    assert "This account is not locked." in r.text and f"line-{holder.line.id}" in r.text
    r = await client.post(f"/backoffice/lines/{holder.line.id}/unfreeze", data={"csrf": csrf})
    assert r.status_code == 409 and not error_page(r.text)
    assert "This line is not frozen." in r.text and f"line-{holder.line.id}" in r.text


async def test_a_refused_ticket_reply_and_update_come_back_on_the_ticket(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    r = await client.post("/api/v1/me/tickets", headers=payer.auth,
                          json={"subject": "No data abroad", "body": "It stopped in Manila."})
    ticket = r.json()["id"]
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/tickets/{ticket}")
    key = page.text.split('name="idem" value="')[1].split('"')[0]
    data = {"csrf": csrf_of(page.text), "body": "   ", "internal": "true", "status": "resolved",
            "idem": key}
    r = await client.post(f"/backoffice/tickets/{ticket}/reply", data=data)
    assert r.status_code == 422 and not error_page(r.text)
    field_marked(r.text, "reply", "body", "This field is required.")
    assert re.search(r'id="reply-internal"[^>]* checked', r.text)
    assert '<option value="resolved" selected>' in r.text.split('id="reply-status"')[1]
    assert f'name="idem" value="{key}"' in r.text
    assert await _count(db, TicketMessage, TicketMessage.author == "staff") == 0
    r = await client.post(f"/backoffice/tickets/{ticket}/reply",
                          data={**data, "body": "Credited, sorry!"})
    assert r.status_code == 303
    assert await _count(db, TicketMessage, TicketMessage.author == "staff") == 1
    # an assignee who does not exist: that field
    r = await client.post(f"/backoffice/tickets/{ticket}/update", data={
        "csrf": data["csrf"], "status": "open", "priority": "high", "assignee": "nobody-here",
        "was_status": "open", "was_priority": "normal", "was_assignee": ""})
    assert r.status_code == 422 and not error_page(r.text)
    assert 'id="update-assignee"' in r.text and 'aria-invalid="true"' in r.text.split(
        'id="update-assignee"')[1].split(">")[0]
    assert '<option value="high" selected>' in r.text.split('id="update-priority"')[1]


async def test_admin_forms_come_back_in_place(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    agent = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, admin)
    # a role that is not one
    r = await client.post(f"/backoffice/staff/{agent.id}", data={
        "csrf": csrf, "role": "boss", "access": "off", "reset_totp": "true"})
    assert r.status_code == 422 and not error_page(r.text)
    field_marked(r.text, f"staff-{agent.id}", "role", "Unknown role.")
    assert '<option value="off" selected>' in r.text.split(f'id="staff-{agent.id}-access"')[1]
    async with db.read() as s:
        entries = (await s.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "staff.change"))).scalar_one()
    assert entries == 0
    # a new catalog entry without a code
    r = await client.get("/backoffice/catalog/new", params={"kind": "tariffs", "code": " "})
    assert r.status_code == 422 and not error_page(r.text)
    field_marked(r.text, "new", "code", "Give the new entry")
    assert '<option value="tariffs" selected>' in r.text
    # a dead job discarded without a reason
    job_id = uuid.uuid4()
    now = utcnow()

    async def dead(s: Any) -> None:
        s.add(OutboxJob(id=job_id, kind="email.send", payload={}, status=JobStatus.dead.value,
                        attempts=8, max_attempts=8, run_at=now, created_at=now,
                        finished_at=now, last_error="smtp down"))

    await db.run(dead)
    r = await client.post(f"/backoffice/jobs/{job_id}/discard", data={"csrf": csrf, "note": " "})
    assert r.status_code == 422 and not error_page(r.text)
    field_marked(r.text, f"discard-{job_id}", "note", "Say why.")
    async with db.read() as s:
        job = await s.get(OutboxJob, job_id)
        assert job is not None and job.status == JobStatus.dead.value


# --- the forms moved onto `in_place` in the twelfth round: API keys, the catalog entry ----------
# (the staff password form: `test_staff_passkeys_admin`)


async def _keys(db: Database) -> list[str]:
    async with db.read() as s:
        return list((await s.execute(select(ApiKey.name).order_by(ApiKey.name))).scalars())


def _key_of(html: str) -> str:
    found = re.search(r'action="/backoffice/api-keys" novalidate>.*?name="idem" value="([^"]*)"',
                      html, re.S)
    assert found, "no one-time key on the new key's form"
    return found.group(1)


async def test_the_new_key_form_keeps_its_one_time_key_through_a_refusal(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Refused, the form comes back with the summary on top (focused), the field marked, what
    was typed and the page's one-time key: the corrected submit makes the key, once; the same
    submit again is told the key was made and gets a fresh, empty form."""
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    key = _key_of((await client.get("/backoffice/api-keys")).text)
    typed = {"csrf": csrf, "idem": key, "name": "billing <export>", "scopes": ["lines:read"],
             "expires_in": "forever"}
    r = await client.post("/backoffice/api-keys", data=typed)
    assert r.status_code == 422 and not error_page(r.text)
    field_marked(r.text, "k", "expires_in", "A whole number of minutes, hours, days or weeks")
    assert 'value="billing &lt;export&gt;"' in r.text and 'value="forever"' in r.text
    assert 'value="lines:read" checked' in r.text
    assert _key_of(r.text) == key and await _keys(db) == []
    corrected = {**typed, "expires_in": "90d"}
    r = await client.post("/backoffice/api-keys", data=corrected)
    assert r.status_code == 200 and 'data-testid="token"' in r.text
    assert await _keys(db) == ["billing <export>"]
    again = await client.post("/backoffice/api-keys", data=corrected)
    assert again.status_code == 409 and not error_page(again.text)
    assert "This API key was already created" in again.text
    assert not re.search(r"sck_[0-9a-f]{12}_[A-Za-z0-9_-]", again.text)  # no token again
    assert _key_of(again.text) not in ("", key) and 'value="billing' not in again.text
    # the page's key with another request: what was typed stays, under a fresh key
    other = await client.post("/backoffice/api-keys", data={**corrected, "name": "other"})
    assert other.status_code == 422 and 'value="other"' in other.text
    assert _key_of(other.text) not in ("", key)
    assert await _keys(db) == ["billing <export>"]
    r = await client.post("/backoffice/api-keys",
                          data={**corrected, "name": "other", "idem": _key_of(other.text)})
    assert r.status_code == 200 and await _keys(db) == ["billing <export>", "other"]


async def test_rotate_and_revoke_are_refused_on_their_row(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    issued = await db.run(lambda s: create_api_key(s, "crm", ["lines:read"]))
    prefix = issued.key.prefix
    r = await client.post(f"/backoffice/api-keys/{prefix}/rotate",
                          data={"csrf": csrf, "overlap": "2h"})
    assert r.status_code == 422 and not error_page(r.text)
    field_marked(r.text, f"rotate-{prefix}", "overlap", "Choose one of: 1h, 24h, 7d.")
    r = await client.post(f"/backoffice/api-keys/{prefix}/revoke", data={"csrf": csrf})
    assert r.status_code == 422 and not error_page(r.text)
    field_marked(r.text, f"revoke-{prefix}", "confirm",
                 "Tick the box to confirm that this key stops working now.")
    # a key that is not there: the error page, as for any other thing that is not there
    r = await client.post("/backoffice/api-keys/000000000000/revoke",
                          data={"csrf": csrf, "confirm": "yes"})
    assert r.status_code == 404 and error_page(r.text)
    async with db.read() as s:
        key = (await s.execute(select(ApiKey))).scalar_one()
        assert (key.revoked_at, key.expires_at) == (None, None)
        assert (await s.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action.like("apikey.%")))).scalar_one() == 0


async def test_a_refused_catalog_entry_comes_back_with_its_text_marked(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    url = "/backoffice/catalog/plans/starter-10"
    before = (await client.get(url)).text
    typed = '{"code": "starter-10", "validity_days": "soon" <b>'
    r = await client.post(url, data={"csrf": csrf, "text": typed})
    assert r.status_code == 422 and not error_page(r.text)
    summary = r.text.split('class="flash error error-summary"')[1].split("</div>")[0]
    assert 'role="alert"' in summary and "autofocus" in summary
    area = re.search(r'<textarea id="c-text"[^>]*>([^<]*)</textarea>', r.text)
    assert area, r.text
    assert 'aria-invalid="true"' in area.group(0)
    assert 'aria-describedby="c-text-error"' in area.group(0)
    assert area.group(1) == typed.replace('"', "&#34;").replace("<", "&lt;").replace(">", "&gt;")
    problems = r.text.split('id="c-text-error">')[1].split("</div>")[0]
    assert "Nothing was saved:" in problems and "not valid JSON" in problems
    assert (await client.get(url)).text == before  # nothing written
    # a page without a refusal marks nothing
    assert 'aria-invalid' not in before.split('id="c-text"')[1].split(">")[0]
