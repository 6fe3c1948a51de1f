"""Round 13, words: each action's answer says what happened (a fixed set of `done` codes, each a
translated sentence; an unknown one the plain "Done.", the query string never echoed); codes are
shown as words in the staff member's language (`words.state_word`); a refused permission says
which roles may and leads back where the member came from; a member switched off is told why on
the sign-in page; an order's payment line and its provider events are written out."""

from __future__ import annotations

import enum
import json
import re
from typing import Any

import httpx
import pytest
from markupsafe import escape

from simcharge.accounts.models import AccountStatus
from simcharge.auth.events import EventKind
from simcharge.backoffice.models import AdjustmentState, Role
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.words import DONE, WORDS, done_message, state_word
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.money import Unit
from simcharge.kit.translations import translate
from simcharge.ledger.models import PendingStatus, TransferKind
from simcharge.lines.models import LineState
from simcharge.orders.fulfilment import Outcome
from simcharge.orders.models import Attention, OrderState, PaymentStatusValue, RefundState
from simcharge.payments.providers.base import PaymentState
from simcharge.tickets.models import TicketPriority, TicketStatus
from tests.backoffice.helpers import adjust_key_of, new_staff, web_sign_in
from tests.orders.helpers import Payer, idem, new_payer, pay_at_sandbox, place, run_worker


def _text(html: str) -> str:
    """What a reader sees: the page without its tags (attribute values are not shown)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _done(html: str) -> str:
    found = re.search(r'<p class="flash (ok|warn)" role="status" data-testid="done">(.*?)</p>',
                      html, re.S)  # fmt: skip
    assert found, "no answer on the page"
    return found.group(2)


async def _paid(client: httpx.AsyncClient, settings: Settings, payer: Payer) -> dict[str, Any]:
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)
    return order


async def _ticket(client: httpx.AsyncClient, payer: Payer) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/me/tickets", headers={**payer.auth, **idem()},
        json={"subject": "No data", "body": "Nothing since noon."},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.mark.parametrize(
    ("kind", "codes"),
    [
        ("order", OrderState), ("attention", Attention), ("payment", PaymentStatusValue),
        ("payment", PaymentState), ("refund", RefundState), ("outcome", Outcome),
        ("line", LineState), ("account", AccountStatus), ("adjustment", AdjustmentState),
        ("ticket", TicketStatus), ("priority", TicketPriority), ("role", Role),
        ("transfer", TransferKind), ("hold", PendingStatus), ("unit", Unit),
        ("security", EventKind), ("permission", Permission),
    ],
)  # fmt: skip
def test_every_code_has_words(kind: str, codes: type[enum.StrEnum]) -> None:
    for code in codes:
        assert code.value in WORDS[kind], (kind, code.value)
        assert "_" not in state_word("en", kind, code.value), (kind, code.value)


def test_the_answer_is_one_of_a_fixed_set() -> None:
    assert done_message("en", None) is None and done_message("en", "revoked") is None
    assert done_message("en", "catalog_saved.7") == ("Saved: the entry is at version 7 now.", False)
    for hostile in ("<script>alert(1)</script>", "catalog_saved", "catalog_saved.x", "applied.3",
                    "catalog_saved.1234567890", "x" * 500):  # fmt: skip
        assert done_message("en", hostile) == ("Done.", False)
    assert done_message("en", "awaiting_approval") == (translate("en", DONE["awaiting_approval"]),
                                                       True)  # fmt: skip


async def test_an_adjustment_above_the_limit_says_it_waits(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    r = await client.post(
        f"/backoffice/lines/{payer.line.id}/adjust",
        data={"csrf": csrf, "target": "wallet", "amount": "50.00", "reason": "goodwill",
              "idem": adjust_key_of(page.text, payer.line.id)},
    )  # fmt: skip
    assert r.status_code == 303 and "done=awaiting_approval" in r.headers["location"]
    page = await client.get(r.headers["location"])
    assert "not posted yet" in _done(page.text) and "second person" in _done(page.text)
    assert 'class="flash warn"' in page.text and "Done." not in _text(page.text)
    # the adjustments list says it in words too
    assert "awaiting approval" in _text(page.text) and "awaiting_approval" not in _text(page.text)
    r = await client.post(
        f"/backoffice/lines/{payer.line.id}/adjust",
        data={"csrf": csrf, "target": "wallet", "amount": "1.00", "reason": "goodwill",
              "idem": adjust_key_of(page.text, payer.line.id)},
    )  # fmt: skip
    page = await client.get(r.headers["location"])
    assert _done(page.text) == "The adjustment was posted to the line."


async def test_an_unknown_done_code_is_plain_done_and_never_echoed(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get("/backoffice", params={"done": "<b>posted $1000</b>"})
    assert page.status_code == 200 and _done(page.text) == "Done."
    assert "posted $1000" not in page.text


async def test_check_with_provider_says_what_the_provider_answered(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, settings, payer)
    agent = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, agent)
    customer = f"/backoffice/customers/{payer.account_id}"
    url = f"/backoffice/orders/{order['id']}/check"
    r = await client.post(url, data={"csrf": csrf, "then": customer})
    assert r.status_code == 303 and "done=checked_fulfilled" in r.headers["location"]
    page = await client.get(r.headers["location"])
    assert _done(page.text) == "The provider says it is paid: the order was credited just now."
    r = await client.post(url, data={"csrf": csrf, "then": customer})
    assert "done=checked_already" in r.headers["location"]
    page = await client.get(r.headers["location"])
    assert "changes nothing" in _done(page.text)


async def test_a_refund_says_it_waits_on_the_provider(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, settings, payer)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled"
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, finance)
    customer = f"/backoffice/customers/{payer.account_id}"
    page = await client.get(customer)
    key = re.search(rf'action="/backoffice/orders/{order["id"]}/refund".*?name="idem" value="([^"]+)"',
                    page.text, re.S)  # fmt: skip
    assert key
    r = await client.post(
        f"/backoffice/orders/{order['id']}/refund",
        data={"csrf": csrf, "then": customer, "amount": "1.00", "reason": "goodwill",
              "idem": key.group(1)},
    )  # fmt: skip
    assert r.status_code == 303 and "done=refund_pending" in r.headers["location"], r.text
    page = await client.get(r.headers["location"])
    assert "waits on its answer" in _done(page.text)
    assert "waiting on the provider" in _text(page.text)  # the refund's state, in words


async def test_a_chinese_member_sees_ticket_states_and_roles_as_words(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    ticket = await _ticket(client, payer)
    agent = await new_staff(db, settings, "agent", language="zh-Hans")
    csrf = await web_sign_in(client, agent)
    r = await client.post(f"/backoffice/tickets/{ticket['id']}/reply",
                          data={"csrf": csrf, "body": "Please restart.", "idem": "k-1"})  # fmt: skip
    assert r.status_code == 303 and "done=reply_sent" in r.headers["location"]
    for url in (r.headers["location"], "/backoffice/tickets",
                f"/backoffice/customers/{payer.account_id}"):  # fmt: skip
        page = await client.get(url)
        shown = _text(page.text)
        assert "waiting_on_customer" not in shown, url
        assert translate("zh-Hans", "waiting on customer") in shown, url
    page = await client.get(f"/backoffice/tickets/{ticket['id']}?done=reply_sent")
    shown = _text(page.text)
    assert _done(page.text) == translate("zh-Hans", "Your reply was sent to the customer.")
    for priority in TicketPriority:
        assert translate("zh-Hans", WORDS["priority"][priority.value]) in shown
    assert f"({translate('zh-Hans', 'agent')})" in shown and "(agent)" not in shown.replace(
        f"({translate('zh-Hans', 'agent')})", ""
    )


async def test_a_refusal_says_which_roles_may_and_leads_back(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, settings, payer)
    agent = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, agent)
    customer = f"/backoffice/customers/{payer.account_id}"
    url = f"/backoffice/orders/{order['id']}/refund"
    form = {"csrf": csrf, "amount": "1.00", "reason": "x", "idem": "k-1"}
    r = await client.post(url, data=form, headers={"referer": f"http://testserver{customer}?q=1"})
    assert r.status_code == 403
    shown = _text(r.text)
    assert "refunds.create" not in shown
    assert "Your role (agent) does not allow refunding an order" in shown
    assert "Roles that may: finance, admin." in shown
    assert f'<a href="{customer}?q=1">Back to where you were</a>' in r.text
    # another site's page, or none: home only
    for referer in ("https://evil.example/backoffice/customers", "", "http://testserver//evil.example/x"):
        r = await client.post(url, data=form, headers={"referer": referer})
        assert r.status_code == 403 and "Back to where you were" not in r.text
        assert 'href="/backoffice"' in r.text
    # a page refused to the role: the roles that may, in the member's language
    r = await client.get("/backoffice/staff", headers={"referer": "http://testserver/backoffice/tickets"})
    assert r.status_code == 403 and "Roles that may: admin." in _text(r.text)
    assert '<a href="/backoffice/tickets">' in r.text


async def test_a_member_switched_off_is_told_why_on_the_sign_in_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    agent = await new_staff(db, settings, "agent")
    admin = await new_staff(db, settings, "admin")
    await web_sign_in(client, agent)
    r = await client.patch(f"/api/v1/admin/staff/{agent.id}", headers=admin.auth,
                           json={"active": False})  # fmt: skip
    assert r.status_code == 200, r.text
    r = await client.get("/backoffice/tickets")
    assert r.status_code == 303 and r.headers["location"] == "/backoffice/login?done=access_off"
    page = await client.get(r.headers["location"])
    assert "an administrator switched your access off" in _done(page.text)
    # a session that ended otherwise (signed out) says nothing of the kind
    other = await new_staff(db, settings, "agent")
    async with httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url)) as c:
        csrf = await web_sign_in(c, other)
        await c.post("/backoffice/logout", data={"csrf": csrf})
        r = await c.get("/backoffice/tickets")
        assert r.status_code == 303 and r.headers["location"] == "/backoffice/login"


async def test_the_payment_line_and_provider_events_in_words(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, settings, payer)
    await run_worker(app, db, settings)  # the sandbox's notifications: the provider events
    await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    line = re.search(rf'data-testid="payment-{order["id"]}">(.*?)</p>', page.text, re.S)
    assert line, "no payment line"
    shown = _text(line.group(1))
    assert "· ·" not in shown and "checks 0" not in shown
    assert shown.count(" · ") == len(set(shown.split(" · "))) - 1  # no fact twice
    assert "Payment: paid" in shown
    assert "sandbox (sandbox)" not in _text(page.text)
    section = re.search(rf'<section class="card" id="order-{order["id"]}">.*?</section>',
                        page.text, re.S)  # fmt: skip
    assert section
    events = _text(section.group(0))
    assert "State: paid" in events and "Amount: $20.00" in events
    assert "credited the order" in events  # the outcome, in words
    raw = re.search(r"<details><summary>Raw report.*?<code class=\"json\">(.*?)</code>",
                    section.group(0), re.S)  # fmt: skip
    assert raw and '"amount"' in raw.group(1)


async def test_saves_on_the_admin_screens_say_what_they_did(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    member = await new_staff(db, settings, "agent")
    r = await client.get("/api/v1/admin/catalog", headers=admin.auth)
    entry = next(p for p in r.json()["plans"] if p["code"] == "starter-10")
    csrf = await web_sign_in(client, admin)
    changed = {**entry, "prices": {**entry["prices"], "USD": "12.00"}}
    r = await client.post("/backoffice/catalog/plans/starter-10",
                          data={"csrf": csrf, "text": json.dumps(changed)})  # fmt: skip
    assert r.status_code == 303, r.text
    assert r.headers["location"].endswith(f"done=catalog_saved.{entry['version'] + 1}")
    page = await client.get(r.headers["location"])
    assert _done(page.text) == f"Saved: the entry is at version {entry['version'] + 1} now."
    # the staff screen: a role change ends their sessions, and says so; nothing chosen: nothing
    r = await client.post(f"/backoffice/staff/{member.id}", data={"csrf": csrf, "role": "finance"})
    assert r.headers["location"] == "/backoffice/staff?done=staff_changed"
    page = await client.get(r.headers["location"])
    assert "Every session of theirs has ended" in _done(page.text)
    assert ">finance<" in page.text and "<option value=\"agent\">agent</option>" in page.text
    r = await client.post(f"/backoffice/staff/{member.id}", data={"csrf": csrf})
    assert r.headers["location"] == "/backoffice/staff?done=staff_unchanged"


async def test_report_captions_are_localised(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await new_payer(db, settings)  # an active line, for "Lines by state"
    finance = await new_staff(db, settings, "finance", language="es")
    await web_sign_in(client, finance)
    page = await client.get("/backoffice/reports")
    assert page.status_code == 200
    assert " max</text>" not in page.text
    between = translate("es", "{title} — highest: {value}").split("{title}")[1].split("{value}")[0]
    assert str(escape(between)) in page.text
    # lines by state are named, not coded
    assert f"<title>{escape(translate('es', 'active'))}: 1" in page.text


async def test_my_settings_name_the_zones_and_the_staff_page_says_why_not_oneself(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    page = await client.get("/backoffice/account")
    assert "The operator&#39;s time zone: UTC" in page.text or "The operator's time zone: UTC" in page.text
    r = await client.post("/backoffice/account/time-zone",
                          data={"csrf": csrf, "time_zone": "Asia/Manila"})  # fmt: skip
    assert r.status_code == 303
    page = await client.get(r.headers["location"])
    assert _done(page.text) == "Your time zone is saved: times are written in it from now on."
    hint = re.search(r'<p class="meta" id="h-zone">(.*?)</p>', page.text, re.S)
    assert hint and "now Manila (UTC+08:00)." in hint.group(1) and "Asia/Manila" not in hint.group(1)
    page = await client.get("/backoffice/staff")
    own = re.search(rf"<tr><td>{admin.username}</td>.*?</tr>", page.text, re.S)
    assert own and "This is you: nobody changes their own role" in own.group(0)
