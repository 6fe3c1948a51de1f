"""Round 13, money forms in the back office: the refund form shows what is left to refund and
refunds all of it only when asked to in so many words; a receipt or credit note sent again
from a page is sent once per form, however often it is posted; the "Adjust" list offers the
buckets the table above it shows, named as it names them; approving and rejecting an
adjustment carry a note (required to reject), kept on it and in the audit; the requester's own
waiting row says it needs a second person."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.backoffice.models import Adjustment, AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.orders.models import Refund
from simcharge.worker.models import OutboxJob
from tests.backoffice.helpers import adjust_key_of, new_staff, web_sign_in
from tests.backoffice.test_customers_and_money import _paid
from tests.orders.helpers import new_payer, order_row, run_worker


def left_to_refund(html: str, order_url: str) -> str:
    """What the refund form of the order at `order_url` (`/backoffice/orders/<id>`) says is
    left (its hidden `left`, minor units)."""
    found = re.search(rf'action="{order_url}/refund".*?name="left" value="(\d+)"', html, re.S)
    assert found, "no refund form with what is left"
    return found.group(1)


async def _refunds(db: Database, order_id: str) -> list[int]:
    async with db.read() as s:
        rows = (await s.execute(select(Refund).where(Refund.order_id == uuid.UUID(order_id))))
        return [r.amount for r in rows.scalars()]


async def _audited(db: Database, action: str) -> list[AuditEntry]:
    async with db.read() as s:
        return list(
            (
                await s.execute(
                    select(AuditEntry)
                    .where(AuditEntry.action == action)
                    .order_by(AuditEntry.at, AuditEntry.id)
                )
            ).scalars()
        )


async def test_the_refund_form_shows_what_is_left_and_refunds_all_only_when_ticked(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer)
    paid = (await order_row(db, order["id"])).paid_amount
    assert paid
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, finance)
    customer = f"/backoffice/customers/{payer.account_id}"
    url = f"/backoffice/orders/{order['id']}"
    page = await client.get(customer)
    assert left_to_refund(page.text, url) == str(paid)
    shown = re.search(rf'data-testid="refundable-{order["id"]}">([^<]+)<', page.text)
    assert shown and "Left to refund" in shown.group(1) and "20" in shown.group(1), shown
    assert f'id="refund-{order["id"]}-all"' in page.text
    assert "Refund all that is left:" in page.text
    base = {"csrf": csrf, "reason": "goodwill", "then": customer}
    form = f"refund-{order['id']}"
    # an empty amount, the box not ticked: refused beside the amount, nothing refunded
    r = await client.post(f"{url}/refund", data={**base, "idem": "k1", "amount": ""})
    assert r.status_code == 422, r.text
    assert f'id="{form}-amount-error"' in r.text
    assert "Type the amount to refund, or tick the box" in r.text
    assert f'aria-describedby="{form}-amount-error"' in r.text
    # both an amount and the box: refused beside the box, what was typed kept
    r = await client.post(
        f"{url}/refund", data={**base, "idem": "k1", "amount": "1.00", "all": "yes",
                                "left": str(paid)},
    )  # fmt: skip
    assert r.status_code == 422
    assert f'id="{form}-all-error"' in r.text and 'value="1.00"' in r.text
    assert re.search(rf'id="{form}-all" name="all" value="yes" checked', r.text)
    # the box with no amount shown: refused
    r = await client.post(f"{url}/refund", data={**base, "idem": "k1", "all": "yes", "left": "x"})
    assert r.status_code == 422 and f'id="{form}-all-error"' in r.text
    assert await _refunds(db, order["id"]) == []
    # a typed part, then the page shows what is left of it
    r = await client.post(f"{url}/refund", data={**base, "idem": "k2", "amount": "5.00"})
    assert r.status_code == 303, r.text
    page = await client.get(customer)
    left = left_to_refund(page.text, url)
    assert int(left) == paid - 500
    # the box ticked on a page showing more than is left now (read before the part): refused
    # beside the amount with what is left; nothing more refunded
    r = await client.post(
        f"{url}/refund", data={**base, "idem": "k3", "all": "yes", "left": str(paid)}
    )
    assert r.status_code == 422 and "can still be refunded" in r.text
    assert await _refunds(db, order["id"]) == [500]
    # the box ticked on the current page: all that is left, once, however often it is sent
    full = {**base, "idem": "k4", "all": "yes", "left": left}
    assert (await client.post(f"{url}/refund", data=full)).status_code == 303
    assert (await client.post(f"{url}/refund", data=full)).status_code == 303
    assert sorted(await _refunds(db, order["id"])) == sorted([500, int(left)])
    assert len(await _audited(db, "order.refund")) == 2


async def _resend_jobs(db: Database, kind: str) -> int:
    async with db.read() as s:
        return len(list((await s.execute(select(OutboxJob).where(OutboxJob.kind == kind))).scalars()))


async def test_a_receipt_and_a_credit_note_are_sent_again_once_per_form(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer)
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, finance)
    customer = f"/backoffice/customers/{payer.account_id}"
    url = f"/backoffice/orders/{order['id']}"
    r = await client.post(f"{url}/refund", data={"csrf": csrf, "reason": "part", "then": customer,
                                                 "idem": "part", "amount": "1.00"})
    assert r.status_code == 303, r.text
    await run_worker(app, db, settings)  # the refund done, its credit note numbered
    async with db.read() as s:
        refund = (await s.execute(select(Refund))).scalar_one()
    assert refund.state == "succeeded"
    page = await client.get(customer)
    receipt_key = re.search(
        rf'action="{url}/resend-receipt".*?name="idem" value="([^"]+)"', page.text, re.S
    )
    note_key = re.search(
        rf'action="/backoffice/refunds/{refund.id}/resend-credit-note".*?name="idem" '
        r'value="([^"]+)"', page.text, re.S,
    )  # fmt: skip
    assert receipt_key and note_key
    receipts = await _resend_jobs(db, "orders.receipt")
    notes = await _resend_jobs(db, "orders.credit_note")
    for _ in range(3):  # a double (triple) click: one e-mail each
        r = await client.post(f"{url}/resend-receipt", data={
            "csrf": csrf, "then": customer, "idem": receipt_key.group(1)})
        assert r.status_code == 303, r.text
        r = await client.post(f"/backoffice/refunds/{refund.id}/resend-credit-note", data={
            "csrf": csrf, "then": customer, "idem": note_key.group(1)})
        assert r.status_code == 303, r.text
    assert await _resend_jobs(db, "orders.receipt") == receipts + 1
    assert await _resend_jobs(db, "orders.credit_note") == notes + 1
    assert len(await _audited(db, "order.resend_receipt")) == 1
    assert len(await _audited(db, "refund.resend_credit_note")) == 1
    # the page drawn again has a new key: sending once more is a new decision
    again = await client.get(customer)
    fresh = re.search(rf'action="{url}/resend-receipt".*?name="idem" value="([^"]+)"', again.text,
                      re.S)
    assert fresh and fresh.group(1) != receipt_key.group(1)
    r = await client.post(f"{url}/resend-receipt", data={
        "csrf": csrf, "then": customer, "idem": fresh.group(1)})
    assert r.status_code == 303
    assert await _resend_jobs(db, "orders.receipt") == receipts + 2
    # a form without its key: refused in place (400), nothing sent
    r = await client.post(f"{url}/resend-receipt", data={"csrf": csrf, "then": customer})
    assert r.status_code == 400, r.text
    assert await _resend_jobs(db, "orders.receipt") == receipts + 2
    assert len(await _audited(db, "order.resend_receipt")) == 2


def _options(html: str, line_id: uuid.UUID) -> list[tuple[str, str]]:
    select_html = re.search(
        rf'<select id="adjust-{line_id}-target" name="target"[^>]*>(.*?)</select>', html, re.S
    )
    assert select_html
    return re.findall(r'<option value="([^"]+)"[^>]*>([^<]*)</option>', select_html.group(1))


async def test_the_adjust_list_offers_the_buckets_the_table_shows_named_as_it_names_them(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer)
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, finance)
    customer = f"/backoffice/customers/{payer.account_id}"
    page = await client.get(customer)
    options = _options(page.text, payer.line.id)
    assert options[0][0] == "wallet"
    buckets = options[1:]
    assert buckets, options
    for _value, text in buckets:
        assert "order:" not in text and "VOICE_S" not in text and "DATA_B" not in text, text
        assert " left" in text and ("expires" in text or "no expiry" in text), text
    assert any(t.startswith(("Minutes", "Data", "SMS")) for _v, t in buckets)
    # a full refund empties the order's buckets: they leave the table and the list alike
    url = f"/backoffice/orders/{order['id']}"
    r = await client.post(f"{url}/refund", data={
        "csrf": csrf, "reason": "all back", "then": customer, "idem": "all", "all": "yes",
        "left": left_to_refund(page.text, url)})
    assert r.status_code == 303, r.text
    await run_worker(app, db, settings)
    page = await client.get(customer)
    after = _options(page.text, payer.line.id)
    assert [v for v, _t in after] == ["wallet"], after
    assert "No units left." in page.text  # the table says the same
    # the service's own checks stay: a bucket that is not the line's is refused beside the list
    r = await client.post(f"/backoffice/lines/{payer.line.id}/adjust", data={
        "csrf": csrf, "target": str(uuid.uuid4()), "amount": "5", "reason": "x",
        "idem": adjust_key_of(page.text, payer.line.id)})
    assert r.status_code == 422 and f'id="adjust-{payer.line.id}-target-error"' in r.text


async def _waiting(client: httpx.AsyncClient, db: Database, settings: Settings, agent_csrf: str,
                   holder: Any) -> Adjustment:
    page = await client.get(f"/backoffice/customers/{holder.account_id}")
    r = await client.post(f"/backoffice/lines/{holder.line.id}/adjust", data={
        "csrf": agent_csrf, "target": "wallet", "amount": "900", "reason": "big goodwill",
        "idem": adjust_key_of(page.text, holder.line.id)})
    assert r.status_code == 303, r.text
    async with db.read() as s:
        adj = (
            await s.execute(
                select(Adjustment)
                .where(Adjustment.line_id == holder.line.id)
                .order_by(Adjustment.created_at.desc())
            )
        ).scalars().first()
    assert adj is not None and adj.state == "awaiting_approval", adj
    return adj


async def test_approving_and_rejecting_carry_a_note_required_to_reject(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    agent = await new_staff(db, settings, "finance")
    approver = await new_staff(db, settings, "finance")
    holder = await new_payer(db, settings)
    agent_csrf = await web_sign_in(client, agent)
    first = await _waiting(client, db, settings, agent_csrf, holder)
    second = await _waiting(client, db, settings, agent_csrf, holder)
    # the requester's own row says why it has no buttons
    own = await client.get("/backoffice/adjustments")
    assert f'data-testid="own-{first.id}"' in own.text
    assert "Needs a second person: you asked for it." in own.text
    assert f'action="/backoffice/adjustments/{first.id}/approve"' not in own.text
    client.cookies.clear()
    csrf = await web_sign_in(client, approver)
    page = await client.get("/backoffice/adjustments")
    assert f'id="decide-{first.id}-note"' in page.text
    assert f'formaction="/backoffice/adjustments/{first.id}/reject"' in page.text
    # a rejection without a reason: refused beside the note, nothing decided
    for note in ("", "   "):
        r = await client.post(f"/backoffice/adjustments/{first.id}/reject",
                              data={"csrf": csrf, "note": note})
        assert r.status_code == 422, r.text
        assert f'id="decide-{first.id}-note-error"' in r.text and "Say why it is rejected." in r.text
    # too long: refused beside it, what was typed kept
    r = await client.post(f"/backoffice/adjustments/{first.id}/reject",
                          data={"csrf": csrf, "note": "n" * 501})
    assert r.status_code == 422 and f'id="decide-{first.id}-note-error"' in r.text
    async with db.read() as s:
        assert (await s.get(Adjustment, first.id)).state == "awaiting_approval"  # type: ignore[union-attr]
    assert await _audited(db, "adjustment.reject") == []
    # with a reason: rejected, the reason on it and in the audit
    r = await client.post(f"/backoffice/adjustments/{first.id}/reject",
                          data={"csrf": csrf, "note": "no ticket backs this"})
    assert r.status_code == 303, r.text
    # approving: the note is optional
    r = await client.post(f"/backoffice/adjustments/{second.id}/approve", data={"csrf": csrf})
    assert r.status_code == 303, r.text
    async with db.read() as s:
        rejected = await s.get(Adjustment, first.id)
        approved = await s.get(Adjustment, second.id)
    assert rejected and (rejected.state, rejected.decision_note) == ("rejected", "no ticket backs this")
    assert approved and (approved.state, approved.decision_note) == ("applied", None)
    [entry] = await _audited(db, "adjustment.reject")
    assert entry.details["note"] == "no ticket backs this"
    [entry] = await _audited(db, "adjustment.approve")
    assert "note" not in entry.details
    page = await client.get("/backoffice/adjustments")
    assert "no ticket backs this" in page.text  # the recent list shows why
