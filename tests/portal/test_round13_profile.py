"""Round 13: the profile page's "Your details" — the display name, e-mail address and phone
number through `PATCH /api/v1/me` itself (a new contact pending until its code is entered on
`/verify`, the current password asked when a contact changes, the current contact given again
cancelling a pending change); every refusal beside its field, in the customer's language, with
nothing changed. Also: the page in the menu and the user center's account box, the formats'
"Save" as the portal's button, the first steps (no line: "Add a line" first; a line added and a
question sent say so) and the device that registered being known at its first sign-in."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.events import EventKind
from simcharge.auth.models import SecurityEvent
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import LineState
from simcharge.notifications.models import Notice
from tests.conftest import SmtpInbox, last_sms_code
from tests.factories import create_account, create_line
from tests.portal.helpers import PASSWORD, csrf_of, new_customer, post_form, sign_in

PHONE = "+14155550142"


async def _account(db: Database, account_id: uuid.UUID) -> Account:
    async with db.read() as s:
        found = await s.get(Account, account_id)
    assert found is not None
    return found


async def _details(client: httpx.AsyncClient, **data: str) -> httpx.Response:
    return await post_form(client, "/account/profile", "/account/profile/details", data)


def _field_error(html: str, name: str) -> str:
    found = re.search(rf'<p class="error" id="e-{name}">([^<]*)</p>', html)
    assert found, f"no error beside {name}"
    return found.group(1)


async def _events(db: Database, account_id: uuid.UUID, kind: EventKind) -> int:
    async with db.read() as s:
        return int(await s.scalar(
            select(func.count()).select_from(SecurityEvent).where(
                SecurityEvent.account_id == account_id, SecurityEvent.kind == kind.value)
        ) or 0)


async def test_the_page_shows_the_details_and_each_contacts_state(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    page = (await client.get("/account/profile")).text
    assert "<title>My details, time zone and formats" in page
    assert "<h1>My details, time zone and formats</h1>" in page
    email = page.split('data-testid="contact-email">', 1)[1].split("</dd>", 1)[0]
    assert customer.email in email and "verified" in email
    phone = page.split('data-testid="contact-sms">', 1)[1].split("</dd>", 1)[0]
    assert "—" in phone and "code" not in phone
    assert 'action="/account/profile/details"' in page
    for name in ("display_name", "email", "phone", "current_password"):
        assert f'id="f-{name}"' in page
    assert f'id="f-email" name="email" type="email" value="{customer.email}"' in page
    # Both forms' buttons are the portal's buttons, not the browser's bare one.
    assert '<button class="btn" type="submit">Save</button>' in page
    assert '<button class="btn" type="submit">Save my details</button>' in page
    assert '<button type="submit">' not in page


async def test_the_display_name_alone_needs_no_password(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await _details(client, display_name="  Maria Santos ", email=customer.email, phone="")
    assert r.status_code == 303 and r.headers["location"] == "/account/profile?saved=details"
    assert "Your details are saved." in (await client.get(r.headers["location"])).text
    account = await _account(db, customer.account_id)
    assert account.display_name == "Maria Santos" and account.email_pending is None
    assert "Hello, Maria Santos" in (await client.get("/account")).text
    # Emptied: the username again.
    r = await _details(client, display_name="", email=customer.email, phone="")
    assert r.status_code == 303
    assert (await _account(db, customer.account_id)).display_name is None
    # Nothing changed: nothing written, nothing sent.
    r = await _details(client, display_name="", email=customer.email, phone="")
    assert r.status_code == 303 and r.headers["location"] == "/account/profile?saved=details"


async def test_adding_a_phone_asks_the_password_then_its_code(
    client: httpx.AsyncClient, db: Database, settings: Settings, deliver: Any
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    # No password: refused beside its field, nothing changed, nothing sent.
    r = await _details(client, display_name="Maria", email=customer.email, phone=PHONE)
    assert r.status_code == 422
    assert _field_error(r.text, "current_password") == "This field is required."
    assert 'class="alert bad"' in r.text and f'value="{PHONE}"' in r.text
    assert 'value="Maria"' in r.text  # what was typed is kept
    account = await _account(db, customer.account_id)
    assert account.phone_pending is None and account.display_name is None
    # A wrong password: as at sign-in (logged as a failure), beside its field.
    r = await _details(client, display_name="Maria", email=customer.email, phone=PHONE,
                       current_password="not the password")
    assert r.status_code == 401
    assert _field_error(r.text, "current_password") == "The current password is wrong."
    account = await _account(db, customer.account_id)
    assert account.phone_pending is None and account.display_name is None
    # The right one: pending, a code on its way; on to the code's page.
    r = await _details(client, display_name="Maria", email=customer.email, phone=PHONE,
                       current_password=PASSWORD)
    assert r.status_code == 303 and r.headers["location"] == "/verify?sent=1"
    account = await _account(db, customer.account_id)
    assert account.phone_pending == PHONE and account.phone is None
    assert account.display_name == "Maria"
    verify = (await client.get(r.headers["location"])).text
    assert f"A code was sent to {PHONE}." in verify
    # The channel of the pending contact, not asked (round 17: the change fixes it).
    assert 'type="radio" name="channel"' not in verify
    assert "If the account could be created" not in verify  # the registration's words
    assert "Cancel the change" in verify  # no number to go back to, but one to drop
    profile = (await client.get("/account/profile")).text
    phone = profile.split('data-testid="contact-sms">', 1)[1].split("</dd>", 1)[0]
    assert f"A code was sent to {PHONE}." in phone and 'href="/verify"' in phone
    assert 'action="/verify/resend"' in phone
    await deliver()
    code = last_sms_code(PHONE)
    r = await post_form(client, "/verify", "/verify", {"channel": "sms", "code": code})
    assert r.status_code == 303 and r.headers["location"] == "/account?verified=1"
    account = await _account(db, customer.account_id)
    assert account.phone == PHONE and account.phone_pending is None
    phone = (await client.get("/account/profile")).text.split(
        'data-testid="contact-sms">', 1)[1].split("</dd>", 1)[0]
    assert PHONE in phone and "verified" in phone and "A code was sent" not in phone


async def test_changing_the_email_then_cancelling_the_change(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox,
    deliver: Any
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await _details(client, email="new.address@example.com", phone="",
                       current_password=PASSWORD)
    assert r.status_code == 303 and r.headers["location"] == "/verify?sent=1"
    account = await _account(db, customer.account_id)
    assert account.email == customer.email  # still in use until the code is entered
    assert account.email_pending == "new.address@example.com"
    verify = (await client.get("/verify?sent=1")).text
    assert "A code was sent to new.address@example.com." in verify
    assert 'action="/account/profile/cancel"' in verify
    profile = (await client.get("/account/profile")).text
    # The field shows the address in use; the pending one is said beside it.
    assert f'id="f-email" name="email" type="email" value="{customer.email}"' in profile
    assert "A code was sent to new.address@example.com." in profile
    await deliver()
    code = inbox.last_code("new.address@example.com")
    # Saving the form as shown again changes nothing (the pending change stays).
    r = await _details(client, email=customer.email, phone="")
    assert r.status_code == 303 and r.headers["location"] == "/account/profile?saved=details"
    assert (await _account(db, customer.account_id)).email_pending == "new.address@example.com"
    r = await post_form(client, "/account/profile", "/account/profile/cancel",
                        {"channel": "email"})
    assert r.status_code == 303 and r.headers["location"] == "/account/profile?saved=cancelled"
    assert "The change is cancelled." in (await client.get(r.headers["location"])).text
    account = await _account(db, customer.account_id)
    assert account.email == customer.email and account.email_pending is None
    # The code sent to the dropped address is void.
    r = await post_form(client, "/verify", "/verify", {"channel": "email", "code": code})
    assert r.status_code in (400, 401, 422)
    assert (await _account(db, customer.account_id)).email == customer.email


async def test_a_bad_contact_is_refused_beside_its_field_and_counts_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await _details(client, display_name="Maria", email="not-an-address", phone="",
                       current_password=PASSWORD)
    assert r.status_code == 422
    assert _field_error(r.text, "email")
    assert 'aria-invalid="true"' in r.text and 'value="not-an-address"' in r.text
    r = await _details(client, email=customer.email, phone="12", current_password=PASSWORD)
    assert r.status_code == 422 and _field_error(r.text, "phone")
    # A contact is replaced, never removed: emptied, it is refused.
    r = await _details(client, email="", phone="", current_password=PASSWORD)
    assert r.status_code == 422
    assert _field_error(r.text, "email") == "This field is required."
    # Too long for the API: said by the field, as the API says it.
    r = await _details(client, display_name="x" * 129, email=customer.email, phone="")
    assert r.status_code == 422 and _field_error(r.text, "display_name")
    account = await _account(db, customer.account_id)
    assert account.display_name is None and account.email_pending is None
    assert account.phone_pending is None
    assert await _events(db, customer.account_id, EventKind.contact_change_requested) == 0


async def test_a_refusal_is_in_the_customers_language(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings, language="es")
    sign_in(client, customer)
    r = await _details(client, email=customer.email, phone=PHONE)
    assert r.status_code == 422
    said = _field_error(r.text, "current_password")
    assert said and said != "This field is required."
    assert (await _account(db, customer.account_id)).phone_pending is None


async def test_the_details_form_needs_its_csrf_token(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    await client.get("/account/profile")
    for action, data in (
        ("/account/profile/details", {"display_name": "Mallory", "email": customer.email,
                                      "phone": ""}),
        ("/account/profile/cancel", {"channel": "email"}),
    ):
        r = await client.post(action, data={"csrf": "forged", **data})
        assert r.status_code == 403
    assert (await _account(db, customer.account_id)).display_name is None
    signed_out = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with signed_out:
        r = await signed_out.get("/account/profile")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_cancelling_with_no_contact_to_keep_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/profile", "/account/profile/cancel",
                        {"channel": "sms"})
    assert r.status_code == 422 and 'class="alert bad"' in r.text
    assert "There is nothing to verify on this channel." in r.text


async def test_the_profile_is_in_the_menu_and_the_account_box(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    dashboard = (await client.get("/account")).text
    nav = dashboard.split('<ul class="nav">', 1)[1].split("</ul>", 1)[0]
    assert '<a href="/account/profile">My details</a>' in nav
    box = dashboard.split('id="me"', 1)[1]
    assert 'href="/account/profile">Change my details</a>' in box
    assert 'href="/account/profile#f-phone">Add a phone number</a>' in box
    profile = (await client.get("/account/profile")).text
    assert '<a href="/account/profile" aria-current="page">My details</a>' in profile


async def test_with_no_line_adding_one_is_the_first_action(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)

    async def drop_line(s: AsyncSession) -> None:
        await s.execute(update(type(customer.line)).where(
            type(customer.line).id == customer.line.id).values(account_id=None))

    await db.run(drop_line)
    sign_in(client, customer)
    page = (await client.get("/account")).text
    box = page.split('data-testid="no-line"', 1)[1].split("</div></div>", 1)[0]
    assert '<a class="btn" href="/account/lines/add">Add a line</a>' in box
    assert '<a href="/account/topup?line=other">Top up a number as a gift</a>' in box
    assert page.count('href="/account/lines/add"') == 1
    # With a line, its top-up is the button and adding another a link.
    customer2 = await new_customer(db, settings)
    sign_in(client, customer2)
    page = (await client.get("/account")).text
    assert 'data-testid="no-line"' not in page
    assert '<p><a href="/account/lines/add">Add a line</a></p>' in page


async def test_a_line_added_and_a_question_sent_say_so(
    client: httpx.AsyncClient, db: Database, settings: Settings, deliver: Any
) -> None:
    customer = await new_customer(db, settings)
    bought = await db.run(lambda s: create_line(s, state=LineState.available))
    sign_in(client, customer)
    r = await post_form(client, "/account/lines/add", "/account/lines/add",
                        {"msisdn": bought.msisdn})
    step_two = await client.get(r.headers["location"])
    await deliver()
    r = await client.post("/account/lines/add", data={
        "csrf": csrf_of(step_two.text), "msisdn": bought.msisdn,
        "code": last_sms_code(bought.msisdn)})
    assert r.status_code == 303 and r.headers["location"] == "/account?added=1"
    page = (await client.get(r.headers["location"])).text
    assert 'class="alert good" role="status">The line is added to your account.' in page
    assert "The line is added" not in (await client.get("/account")).text

    r = await post_form(client, "/account/help", "/account/help", {
        "subject": "Roaming", "body": "Does my data work in Tokyo?"})
    assert r.status_code == 303 and r.headers["location"].endswith("?sent=1")
    ticket = (await client.get(r.headers["location"])).text
    assert 'class="alert good" role="status">We received your question.' in ticket
    again = await client.get(r.headers["location"].removesuffix("?sent=1"))
    assert "We received your question." not in again.text


# --- the device that registered is known ----------------------------------------------------------


async def _new_device_alerts(db: Database, username: str) -> tuple[int, int]:
    async with db.read() as s:
        account = await s.scalar(select(Account).where(Account.username == username))
        assert account is not None
        notices = int(await s.scalar(select(func.count()).select_from(Notice).where(
            Notice.account_id == account.id, Notice.template == "security.new_device")) or 0)
    return await _events(db, account.id, EventKind.new_device), notices


@pytest.mark.parametrize("verify_signed_out", [False, True])
async def test_the_registering_device_is_known_at_its_first_sign_in(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Any, app: Any,
    verify_signed_out: bool,
) -> None:
    password = "a quiet river at dawn"
    name = f"reg{uuid.uuid4().hex[:6]}"
    address = f"{name}@example.com"
    r = await post_form(client, "/register", "/register", {
        "username": name, "password": password, "email": address})
    assert r.status_code == 303
    if verify_signed_out:  # the code entered before signing in, from the same browser
        await deliver()
        r = await post_form(client, "/verify?sent=1", "/verify", {
            "channel": "email", "code": inbox.last_code(address), "login": name,
            "password": password})
        assert r.status_code == 303 and r.headers["location"] == "/login?verified=1"
    r = await post_form(client, "/login", "/login", {"login": name, "password": password})
    assert r.status_code == 303 and r.headers["location"] == "/account"
    await deliver()
    assert await _new_device_alerts(db, name) == (0, 0)
    # Another browser (no device cookie, another browser's header): alerted.
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver",
        headers={"user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
                               "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 "
                               "Mobile/15E148 Safari/604.1"})
    async with other:
        r = await post_form(other, "/login", "/login", {"login": name, "password": password})
        assert r.status_code == 303 and r.headers["location"] == "/account"
    await deliver()
    assert await _new_device_alerts(db, name) == (1, 1)
    # The first browser again: known, no alert.
    await client.post("/logout", data={"csrf": csrf_of((await client.get("/account")).text)})
    r = await post_form(client, "/login", "/login", {"login": name, "password": password})
    assert r.status_code == 303
    await deliver()
    assert await _new_device_alerts(db, name) == (1, 1)


async def test_a_device_verifying_elsewhere_is_remembered_too(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox, deliver: Any,
    app: Any,
) -> None:
    """Registered on one browser, the code entered (with the password) on another: that one is
    the account's too — its first sign-in is no stranger's."""
    password = "a quiet river at dawn"
    name = f"reg{uuid.uuid4().hex[:6]}"
    address = f"{name}@example.com"
    r = await post_form(client, "/register", "/register", {
        "username": name, "password": password, "email": address})
    assert r.status_code == 303
    await deliver()
    phone = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver",
        headers={"user-agent": "Mozilla/5.0 (Linux; Android 14) Chrome/120.0 Mobile"})
    async with phone:
        r = await post_form(phone, "/verify", "/verify", {
            "channel": "email", "code": inbox.last_code(address), "login": name,
            "password": password})
        assert r.status_code == 303 and r.headers["location"] == "/login?verified=1"
        r = await post_form(phone, "/login", "/login", {"login": name, "password": password})
        assert r.status_code == 303
    await deliver()
    assert await _new_device_alerts(db, name) == (0, 0)


async def test_a_registration_refused_sets_no_device_cookie(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await db.run(lambda s: create_account(s, username="takenname"))
    r = await post_form(client, "/register", "/register", {
        "username": "takenname", "password": "a quiet river at dawn",
        "email": "someone@example.com"})
    assert r.status_code == 409
    assert "sc_device" not in r.headers.get("set-cookie", "")
