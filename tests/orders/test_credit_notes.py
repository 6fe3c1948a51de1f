"""Credit notes: a refund gets a document of its own, and the receipt stays as it was issued.

What was wrong: a refund deleted the order's kept receipts (`forget_receipts`) and the next
request rendered the receipt again with a "Refunded" row and a "Refunded"/"Partly refunded"
status (`ReceiptDocument.revision` = the refunded amount): the receipt a customer kept and the one
we showed later differed, and no document stated the refund itself — no number, no original
receipt, nothing of what was taken back from the line. Now the receipt is kept as issued and
served byte for byte; each done refund of an order that has a receipt gets a credit note
(`C<year>-<6 digits>`, its own gapless series), numbered once in the transaction that completes
the refund, available as PDF and JSON to the payer and e-mailed with the refund's notice; a
refund still pending or refused has none."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import httpx
import pytest
from pypdf import PdfReader
from sqlalchemy import select, update

from simcharge.app import create_app
from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.models import (
    Order,
    ReceiptCounter,
    ReceiptDocument,
    Refund,
    SandboxPayment,
)
from simcharge.orders.refunds import complete_refund, credit_notes_of, request_refund
from simcharge.orders.service import issue_credit_note
from simcharge.payments.providers import RefundResult, RefundState
from tests.auth.helpers import problem
from tests.conftest import SmtpInbox
from tests.factories import load_demo_catalog
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    idem,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
)

JSON = {"Accept": "application/json"}


def _problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = problem(r)
    assert body["type"].endswith(f"/{slug}"), body
    return body


def _text(pdf: bytes) -> str:
    """The text a reader copies out of the PDF (pypdf reads fpdf2's two-byte codes a byte at a
    time: the NULs are dropped, as `test_receipts._text` explains)."""
    pages = PdfReader(io.BytesIO(pdf)).pages
    return "\n".join(page.extract_text() for page in pages).replace("\x00", "")


def _embedded_fonts(pdf: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(pdf))
    names = []
    for ref in reader.pages[0]["/Resources"]["/Font"].values():
        for descendant in ref.get_object().get("/DescendantFonts", []):
            descriptor = descendant.get_object()["/FontDescriptor"].get_object()
            if any(k in descriptor for k in ("/FontFile", "/FontFile2", "/FontFile3")):
                names.append(str(descriptor["/FontName"]))
    return names


async def _staff(db: Database) -> dict[str, str]:
    issued = await db.run(lambda s: create_api_key(s, "finance", ["refunds:write"]))
    return {"Authorization": f"Bearer {issued.token}"}


async def _credited(client: httpx.AsyncClient, settings: Settings, payer: Payer,
                    **kw: Any) -> dict[str, Any]:
    order = await place(client, payer, **kw)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return r.json()


async def _refund(client: httpx.AsyncClient, staff: dict[str, str], order_id: str,
                  **body: Any) -> dict[str, Any]:
    r = await client.post(f"/api/v1/admin/orders/{order_id}/refunds",
                          headers={**staff, **idem()}, json={"reason": "test", **body})
    assert r.status_code == 202, r.text
    return r.json()


async def _refunds(client: httpx.AsyncClient, payer: Payer, order_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=payer.auth)
    refunds: list[dict[str, Any]] = r.json()["refunds"]
    return refunds


async def _counter(db: Database, year: int) -> int | None:
    async with db.read() as s:
        row = await s.get(ReceiptCounter, f"credit_note:{year}")
    return row.value if row is not None else None


def _succeeded(refund: Refund) -> RefundResult:
    return RefundResult(refund_id=refund.reference, provider_refund_id=f"rf_{refund.reference}",
                        state=RefundState.succeeded, amount=refund.amount, currency="USD", raw={})


async def test_a_refund_leaves_the_receipt_as_issued(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The receipt the payer kept and the one asked for after a refund are the same bytes, and
    say nothing of the refund (its credit note does): "Paid", no "Refunded" row."""
    staff = await _staff(db)
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="traveller-20")
    url = f"/api/v1/orders/{order['id']}/receipt"
    before = await client.get(url, headers=payer.auth)
    assert before.status_code == 200
    await _refund(client, staff, order["id"], amount=500)
    await run_worker(app, db, settings)
    assert (await order_row(db, order["id"])).state == "partially_refunded"

    after = await client.get(url, headers=payer.auth)
    assert after.status_code == 200 and after.content == before.content
    text = _text(after.content)
    assert "Refunded" not in text and "Partly refunded" not in text, text
    body = (await client.get(url, headers={**payer.auth, **JSON})).json()
    assert body["status"] == "Paid" and body["total"]["minor"] == 2000
    # The JSON still tells an API client what was refunded since (the credit notes say how).
    assert body["refunded"]["minor"] == 500


async def test_a_receipt_kept_from_before_credit_notes_is_rendered_again_as_issued(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A receipt kept under the old rule (rendered again after a refund: its revision the
    refunded amount) is not the receipt as issued: it is rendered again, once, as issued."""
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="traveller-20")
    url = f"/api/v1/orders/{order['id']}/receipt"
    issued = (await client.get(url, headers=payer.auth)).content
    oid = uuid.UUID(order["id"])
    # As the old rule left an order refunded $5 of: the receipt rendered again, revision 500.
    await db.run(lambda s: s.execute(update(Order).where(Order.id == oid).values(
        refunded_amount=500, state="partially_refunded")))
    await db.run(lambda s: s.execute(update(ReceiptDocument).where(
        ReceiptDocument.order_id == oid).values(revision=500, pdf=b"%PDF stale")))
    again = (await client.get(url, headers=payer.auth)).content
    assert again != b"%PDF stale" and "Refunded" not in _text(again)
    assert (await client.get(url, headers=payer.auth)).content == again
    assert _text(again) == _text(issued)


async def test_a_done_refund_has_a_numbered_credit_note_emailed_with_its_notice(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """Each done refund gets the next number of its own series, naming the receipt it corrects,
    the amount (of the price and of the fee), and what was taken back from the line; the PDF is
    attached to the refund's e-mail, and the order lists it."""
    staff = await _staff(db)
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="explorer-50", method="paypal")
    total, fee = order["total"]["minor"], order["fee"]["minor"]
    await run_worker(app, db, settings)  # the receipt's own e-mail
    inbox.messages.clear()
    receipt = (await order_row(db, order["id"])).receipt_number
    assert receipt is not None
    year = utcnow().year

    await _refund(client, staff, order["id"], amount=1000)
    await run_worker(app, db, settings)
    [first] = await _refunds(client, payer, order["id"])
    assert first["state"] == "succeeded"
    assert first["credit_note_number"] == f"C{year}-000001"
    assert first["credit_note_url"] == f"/api/v1/refunds/{first['id']}/credit-note"

    [mail] = inbox.to(payer.email)
    assert f"C{year}-000001" in str(mail["Subject"])
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert f"C{year}-000001" in text and receipt in text and "attached" in text, text
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename() == f"credit-note-C{year}-000001.pdf"
    pdf = attachment.get_content()
    words = _text(pdf)
    assert f"Credit note C{year}-000001" in words and receipt in words, words
    assert "$10.00" in words and "Taken back from the line" in words, words
    # The PDF asked for later is the one e-mailed.
    r = await client.get(first["credit_note_url"], headers=payer.auth)
    assert r.status_code == 200 and r.content == pdf
    assert r.headers["content-type"] == "application/pdf"

    body = (await client.get(first["credit_note_url"], headers={**payer.auth, **JSON})).json()
    share = (fee * 1000 * 2 + total) // (2 * total)  # the fee's share, rounded half up
    assert body["number"] == f"C{year}-000001" and body["receipt_number"] == receipt
    assert (body["total"]["minor"], body["fee"]["minor"], body["price"]["minor"]) == (
        1000, share, 1000 - share)
    assert body["total"]["currency"] == "USD" and body["taken_back"], body
    assert body["refund_reference"] == first["reference"]

    # The next refund: the next number, no gap; the receipt is still the one issued.
    await _refund(client, staff, order["id"])
    await run_worker(app, db, settings)
    numbers = [x["credit_note_number"] for x in await _refunds(client, payer, order["id"])]
    assert numbers == [f"C{year}-000001", f"C{year}-000002"]
    assert await _counter(db, year) == 2
    assert (await order_row(db, order["id"])).receipt_number == receipt
    async with db.read() as s:
        linked = await credit_notes_of(s, [uuid.UUID(order["id"])])
    assert [x.credit_note_number for x in linked[uuid.UUID(order["id"])]] == numbers
    await assert_ledger_balanced(db)


async def test_a_chinese_credit_note_has_its_glyphs_and_traditional_forms(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """In the account's language, with the receipts' fonts: Noto Sans TC for zh-Hant."""
    staff = await _staff(db)
    payer = await new_payer(db, settings, language="zh-Hant")
    order = await _credited(client, settings, payer, plan="starter-10")
    await _refund(client, staff, order["id"])
    await run_worker(app, db, settings)
    [refund] = await _refunds(client, payer, order["id"])
    r = await client.get(refund["credit_note_url"], headers=payer.auth)
    assert r.status_code == 200
    assert sorted(n.split("+")[-1] for n in _embedded_fonts(r.content)) == [
        "DejaVuSansBook", "NotoSansTC"]
    english = await client.get(f"{refund['credit_note_url']}?lang=en", headers=payer.auth)
    assert "Credit note" in _text(english.content)


async def test_the_order_page_and_my_orders_link_the_credit_notes(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Beside the receipt, each credit note, on the order's page and on "My orders"
    (`refunds.credit_notes_of`); an order without one links none."""
    staff = await _staff(db)
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="traveller-20")
    other = await _credited(client, settings, payer, plan="traveller-20")
    await _refund(client, staff, order["id"], amount=500)
    await run_worker(app, db, settings)
    oid = uuid.UUID(order["id"])
    async with db.read() as s:
        notes = await credit_notes_of(s, [oid, uuid.UUID(other["id"])])
    assert list(notes) == [oid]
    [note] = notes[oid]
    client.cookies.set("sc_session", payer.token)
    link = f"/api/v1/refunds/{note.id}/credit-note?lang=en"
    for page in (f"/account/orders/{oid}", "/account/records"):
        r = await client.get(page)
        assert r.status_code == 200, r.text
        assert link in r.text and f"Credit note {note.credit_note_number} (PDF)" in r.text, page
    r = await client.get(f"/account/orders/{other['id']}")
    assert r.status_code == 200 and "/credit-note" not in r.text


async def test_a_refund_not_done_or_refused_has_no_credit_note(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Pending: not yet (404 `credit-note-not-ready`); refused: never (404
    `credit-note-refund-failed`) — no number is taken, so the series has no gap."""
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="traveller-20")
    oid = uuid.UUID(order["id"])
    refund = await db.run(lambda s: request_refund(
        s, oid, amount=500, reason=None, requested_by="staff:a", now=utcnow()))
    url = f"/api/v1/refunds/{refund.id}/credit-note"
    r = await client.get(url, headers=payer.auth)
    assert _problem(r, 404, "credit-note-not-ready")["field"] == "refund_id"
    refused = RefundResult(refund_id=refund.reference, provider_refund_id=None,
                           state=RefundState.failed, amount=500, currency="USD", raw={})
    assert await db.run(lambda s: complete_refund(s, oid, refused, utcnow())) == "refund_failed"
    r = await client.get(url, headers={**payer.auth, **JSON})
    assert _problem(r, 404, "credit-note-refund-failed")["field"] == "refund_id"
    assert await db.run(lambda s: issue_credit_note(s, refund.id, utcnow())) is None
    assert await _counter(db, utcnow().year) is None
    [shown] = await _refunds(client, payer, order["id"])
    assert (shown["credit_note_number"], shown["credit_note_url"]) == (None, None)


async def test_a_credit_note_is_only_the_payers(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Someone else's refund answers as one that does not exist (an id reveals nothing)."""
    staff = await _staff(db)
    payer, other = await new_payer(db, settings), await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="traveller-20")
    await _refund(client, staff, order["id"])
    await run_worker(app, db, settings)
    [refund] = await _refunds(client, payer, order["id"])
    r = await client.get(refund["credit_note_url"], headers=other.auth)
    assert _problem(r, 404, "refund-not-found")["field"] == "refund_id"
    r = await client.get(f"/api/v1/refunds/{uuid.uuid4()}/credit-note", headers=payer.auth)
    assert _problem(r, 404, "refund-not-found")["field"] == "refund_id"
    r = await client.get("/api/v1/refunds/not-an-id/credit-note", headers=payer.auth)
    assert r.status_code == 422
    r = await client.get(refund["credit_note_url"])
    assert r.status_code == 401
    body = (await client.get(refund["credit_note_url"], headers={**payer.auth, **JSON})).json()
    assert body["order_id"] == order["id"]


async def test_a_payment_never_credited_gets_its_refund_notice_and_no_credit_note(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """No receipt, so nothing for a credit note to correct (404 `credit-note-uncredited`); the
    refund's e-mail goes out as before, without an attachment."""
    staff = await _staff(db)
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20")
    row = await order_row(db, order["id"])
    await db.run(lambda s: s.execute(update(SandboxPayment).where(
        SandboxPayment.reference == row.reference).values(amount=1999, state="paid")))
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "paid"
    await _refund(client, staff, order["id"])
    await run_worker(app, db, settings)
    [refund] = await _refunds(client, payer, order["id"])
    assert refund["state"] == "succeeded" and refund["credit_note_number"] is None
    r = await client.get(refund["credit_note_url"] or f"/api/v1/refunds/{refund['id']}/credit-note",
                         headers=payer.auth)
    assert _problem(r, 404, "credit-note-uncredited")["field"] == "refund_id"
    [mail] = [m for m in inbox.to(payer.email) if "19.99" in str(m["Subject"])]
    assert not list(mail.iter_attachments())


async def test_a_refund_made_at_the_provider_gets_a_credit_note_too(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Money given back in the provider's dashboard is recorded as a refund of the order
    (`reversals`); once its money is posted it is a done refund like ours: numbered, and the
    receipt stays as issued."""
    from simcharge.orders.reversals import refund_not_ours

    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="traveller-20")
    url = f"/api/v1/orders/{order['id']}/receipt"
    issued = (await client.get(url, headers=payer.auth)).content
    oid = uuid.UUID(order["id"])
    news = RefundResult(refund_id="re_dashboard", provider_refund_id="re_dashboard",
                        state=RefundState.succeeded, amount=700, currency="USD", raw={})
    outcome = await db.run(lambda s: refund_not_ours(
        s, oid, news, utcnow(), source="webhook:evt_1", what="charge.refunded"))
    assert outcome != "unknown_refund"
    [refund] = await _refunds(client, payer, order["id"])
    assert refund["credit_note_number"] == f"C{utcnow().year}-000001", refund
    body = (await client.get(refund["credit_note_url"], headers={**payer.auth, **JSON})).json()
    assert body["total"]["minor"] == 700 and body["taken_back"] == []
    assert (await client.get(url, headers=payer.auth)).content == issued


async def test_a_completion_arriving_twice_numbers_the_credit_note_once(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The provider's notification and the worker's answer both report the refund done: one
    number, and the counter moved once."""
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="traveller-20")
    oid = uuid.UUID(order["id"])
    refund = await db.run(lambda s: request_refund(
        s, oid, amount=500, reason=None, requested_by="staff:a", now=utcnow()))
    assert await db.run(lambda s: complete_refund(s, oid, _succeeded(refund), utcnow())) \
        == "refunded"
    assert await db.run(lambda s: complete_refund(s, oid, _succeeded(refund), utcnow())) \
        == "already"
    number = await db.run(lambda s: issue_credit_note(s, refund.id, utcnow()))
    year = utcnow().year
    assert number == f"C{year}-000001" and await _counter(db, year) == 1


async def test_the_credit_note_job_run_twice_mails_once(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """The worker dies after e-mailing the credit note and before marking its job done; the job
    runs again: the same number, the same PDF kept, one e-mail."""
    from tests.worker.test_handlers_twice import run_twice

    staff = await _staff(db)
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer, plan="traveller-20")
    await run_worker(app, db, settings)
    inbox.messages.clear()
    await _refund(client, staff, order["id"])
    await run_twice(db, settings, "payments.refund", client)
    await run_twice(db, settings, "orders.credit_note", client)
    [refund] = await _refunds(client, payer, order["id"])
    mails = [m for m in inbox.to(payer.email) if refund["credit_note_number"] in str(m["Subject"])]
    assert len(mails) == 1
    [attached] = list(mails[0].iter_attachments())
    r = await client.get(refund["credit_note_url"], headers=payer.auth)
    assert attached.get_content() == r.content
    assert await _counter(db, utcnow().year) == 1


@pytest.mark.postgres_only
async def test_two_workers_completing_one_refund_at_once_issue_one_number(
    fresh_db: Database, settings: Settings
) -> None:
    """Two completions of the same refund and a payer asking for its credit note, all at once,
    on PostgreSQL (real connections and commits): one number; and two other refunds completing
    at once take the next two, without a gap."""
    db = fresh_db
    await db.run(load_demo_catalog)
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        payer = await new_payer(db, settings)
        order = await _credited(client, settings, payer, plan="traveller-20")
    oid = uuid.UUID(order["id"])
    refunds = [
        await db.run(lambda s, n=n: request_refund(
            s, oid, amount=500, reason=None, requested_by="staff:a", now=utcnow(),
            idempotency_key=f"k{n}"))
        for n in range(3)
    ]
    first, *others = refunds
    outcomes = await asyncio.gather(
        db.run(lambda s: complete_refund(s, oid, _succeeded(first), utcnow())),
        db.run(lambda s: complete_refund(s, oid, _succeeded(first), utcnow())),
        db.run(lambda s: issue_credit_note(s, first.id, utcnow())),
    )
    assert sorted(str(x) for x in outcomes[:2]) == ["already", "refunded"]
    year = utcnow().year
    async with db.read() as s:
        numbered = (await s.execute(select(Refund.credit_note_number).where(
            Refund.id == first.id))).scalar_one()
    assert numbered == f"C{year}-000001" and await _counter(db, year) == 1
    await asyncio.gather(*(
        db.run(lambda s, r=r: complete_refund(s, oid, _succeeded(r), utcnow())) for r in others
    ))
    async with db.read() as s:
        numbers = sorted((await s.execute(select(Refund.credit_note_number).where(
            Refund.order_id == oid))).scalars().all())
    assert numbers == [f"C{year}-00000{n}" for n in (1, 2, 3)]
    assert await _counter(db, year) == 3
    await assert_ledger_balanced(db)
