"""The portal's forms without a browser: CSRF, headers, redirects, languages, errors."""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.ledger import chart
from simcharge.ledger.service import NewTransfer, ensure_accounts, post_transfers
from simcharge.portal.web import bar_class, provider_url_ok, safe_next
from tests.conftest import SmtpInbox
from tests.orders.helpers import run_worker
from tests.portal.helpers import (
    PASSWORD,
    csrf_of,
    new_customer,
    post_form,
    sign_in,
    sign_in_with_second_factor,
)

pytestmark = pytest.mark.usefixtures("shop")


async def test_pages_carry_a_strict_policy_and_refuse_framing(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    assert "<script>" not in r.text and "style=" not in r.text


async def test_a_form_without_its_token_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post("/login", data={"login": "x", "password": "y"})
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("text/html")
    r = await client.post("/login", data={"login": "x", "password": "y", "csrf": "forged"})
    assert r.status_code == 403


async def test_signed_in_forms_need_the_sessions_token(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    anonymous = csrf_of((await client.get("/login")).text)
    sign_in(client, customer)
    r = await client.post("/account/security/lock", data={"csrf": anonymous, "confirm": "yes"})
    assert r.status_code == 403
    assert (await client.get("/account")).status_code == 200


def test_redirects_stay_on_this_site(settings: Settings) -> None:
    assert safe_next("/account/topup?plan=x") == "/account/topup?plan=x"
    for bad in ("//evil.example", "/\\evil.example", "https://evil.example/", "javascript:x", ""):
        assert safe_next(bad) == "/account"
    assert provider_url_ok(settings, "http://testserver/sandbox/pay/sbx_1")
    assert provider_url_ok(settings, "https://checkout.stripe.com/c/pay/cs_test_1")
    assert not provider_url_ok(settings, "https://evil.example/pay")
    assert not provider_url_ok(settings, "http://checkout.stripe.com/c/pay")


async def test_sign_in_goes_to_next_only_if_it_is_ours(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    r = await post_form(client, "/login", "/login", {
        "login": customer.username, "password": PASSWORD, "next": "//evil.example/x"})
    assert r.status_code == 303
    assert r.headers["location"] == "/account"


async def test_the_language_comes_from_the_browser_then_the_switcher(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/", headers={"accept-language": "zh-TW,zh;q=0.9,en;q=0.5"})
    assert '<html lang="zh-Hant">' in r.text
    r = await client.get("/language/es", params={"next": "/login"})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = await client.get("/", headers={"accept-language": "zh-TW"})
    assert '<html lang="es">' in r.text
    assert (await client.get("/language/xx")).status_code == 404
    r = await client.get("/language/fil", params={"next": "https://evil.example"})
    assert r.headers["location"] == "/"


async def test_money_and_dates_are_formatted_for_the_reader(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    client.cookies.set("sc_lang", "es")
    r = await client.get("/account")
    assert "12,50" in r.text and "US$" in r.text
    client.cookies.set("sc_lang", "en")
    assert "$12.50" in (await client.get("/account")).text


async def test_the_user_center_needs_a_session(client: httpx.AsyncClient) -> None:
    r = await client.get("/account/records?kind=usage")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Faccount%2Frecords%3Fkind%3Dusage"
    r = await client.get("/login", params={"next": "/account/records?kind=usage"})
    assert 'name="next" value="/account/records?kind=usage"' in r.text


async def test_registration_errors_are_shown_by_their_field(client: httpx.AsyncClient) -> None:
    r = await post_form(client, "/register", "/register", {
        "username": "newbie", "password": "password", "email": "not-an-address"})
    assert r.status_code == 422
    assert 'id="e-password"' in r.text and 'id="e-email"' in r.text
    assert 'value="newbie"' in r.text


async def test_register_then_verify_with_the_emailed_code(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: object
) -> None:
    r = await post_form(client, "/register", "/register", {
        "username": "verifyme", "password": "a quiet river at dawn",
        "email": "verifyme@example.com", "language": "fil"})
    # The login is not in the URL (history, proxies, logs): the verify page has it from a cookie.
    assert r.status_code == 303 and r.headers["location"] == "/verify?sent=1"
    assert 'value="verifyme"' in (await client.get(r.headers["location"])).text
    await deliver()  # type: ignore[operator]
    code = inbox.last_code("verifyme@example.com")
    r = await post_form(client, r.headers["location"], "/verify", {
        "channel": "email", "code": "000000" if code != "000000" else "111111",
        "login": "verifyme", "password": "a quiet river at dawn"})
    assert r.status_code in (400, 401, 422)
    r = await post_form(client, "/verify?sent=1", "/verify", {
        "channel": "email", "code": code, "login": "verifyme",
        "password": "a quiet river at dawn"})
    assert r.status_code == 303 and r.headers["location"] == "/login?verified=1"
    assert 'value="verifyme"' not in (await client.get("/verify")).text  # forgotten once used


async def test_register_with_a_phone_then_verify_it_with_the_texted_code(
    client: httpx.AsyncClient, deliver: object
) -> None:
    from tests.conftest import last_sms_code

    phone = "+14155550177"
    r = await post_form(client, "/register", "/register", {
        "username": "textme", "password": "a quiet river at dawn", "phone": phone,
        "language": "es"})
    assert r.status_code == 303 and r.headers["location"] == "/verify?sent=1"
    await deliver()  # type: ignore[operator]
    code = last_sms_code(phone)
    wrong = "000000" if code != "000000" else "111111"
    r = await post_form(client, r.headers["location"], "/verify", {
        "channel": "sms", "code": wrong, "login": "textme", "password": "a quiet river at dawn"})
    assert r.status_code in (400, 401, 422)
    r = await post_form(client, "/verify?sent=1", "/verify", {
        "channel": "sms", "code": code, "login": "textme", "password": "a quiet river at dawn"})
    assert r.status_code == 303 and r.headers["location"] == "/login?verified=1"
    r = await post_form(client, "/login", "/login",
                        {"login": phone, "password": "a quiet river at dawn"})
    assert r.status_code == 303 and r.headers["location"] == "/account"
    page = await client.get("/account")  # in Spanish, the language chosen at registration
    phone_row = page.text.split("<dt>Teléfono</dt>", 1)[1].split("</dd>", 1)[0]
    assert phone in phone_row and "verificado" in phone_row and "sin verificar" not in phone_row


async def test_a_review_shows_price_fee_and_total_before_paying(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await client.get("/account/topup/review", params={
        "line": str(customer.line.id), "plan": "traveller-20", "method": "paypal"})
    assert r.status_code == 200, r.text
    for testid in ("price", "fee", "total"):
        assert f'data-testid="{testid}"' in r.text
    r = await client.get("/account/topup/review", params={
        "line": str(customer.line.id), "plan": "no-such-plan", "method": "paypal"})
    assert r.status_code == 404
    assert 'class="alert bad"' in r.text
    r = await client.get("/account/topup/review", params={
        "line": "other", "msisdn": "+19999999999", "plan": "traveller-20", "method": "sandbox"})
    assert r.status_code in (404, 422) and 'id="e-msisdn"' in r.text


async def test_someone_elses_order_is_not_found(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await client.get("/account/orders/01938a9e-0000-7000-8000-000000000000")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert (await client.get("/account/orders/not-a-uuid")).status_code == 404


async def test_records_filter_and_export(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await client.get("/account/records", params={"kind": "package"})
    assert r.status_code == 200
    assert r.text.count("<td>Package</td>") == 2
    assert "<td>Adjustment</td>" not in r.text
    r = await client.get("/account/records.csv", params={"kind": "adjustment"})
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][:3] == ["time_utc", "number", "kind"]
    assert [row[2] for row in rows[1:]] == ["adjustment"]
    assert rows[1][3] == "1250"
    r = await client.get("/account/records", params={"from": "2000-01-01", "to": "2000-01-02"})
    assert "No records for these filters." in r.text


async def test_records_from_or_to_a_day_outside_our_years_are_not_filtered_by_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A day before 2000 or after 2999 is taken as no day, as one that is not a date is (the
    back office's years): the end of 9999-12-31 is past the last day a date can be."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    for days in ({"to": "9999-12-31"}, {"from": "0001-01-01"}, {"from": "1999-12-31"},
                 {"from": "3000-01-01"}, {"from": "0001-01-01", "to": "9999-12-31"}):
        r = await client.get("/account/records", params={"kind": "package", **days})
        assert r.status_code == 200, (days, r.text)
        assert r.text.count("<td>Package</td>") == 2, days
        r = await client.get("/account/records.csv", params={"kind": "adjustment", **days})
        assert r.status_code == 200, (days, r.text)
        rows = list(csv.reader(io.StringIO(r.text)))
        assert [(row[2], row[3]) for row in rows[1:]] == [("adjustment", "1250")], days


async def test_records_of_usage_refunds_and_money_put_on_the_balance_filter_by_their_kind(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Every kind a ledger code gives is found by its own filter: usage (codes no kind names),
    a refund, and a payment finance put on the balance (`applied`, a top-up)."""
    customer = await new_customer(db, settings)
    line = customer.line
    shard = chart.shard_of(line.id)
    sink, source = chart.consumption("USD", shard), chart.funding("USD")

    async def post(s: AsyncSession) -> None:
        await ensure_accounts(s, [sink, source])
        await post_transfers(s, [
            NewTransfer(id=uuid7(), amount=300, unit="USD", debit_account_id=line.wallet_account_id,
                        credit_account_id=sink.id, code="usage", reference="usage:call-1"),
            NewTransfer(id=uuid7(), amount=700, unit="USD", debit_account_id=source.id,
                        credit_account_id=line.wallet_account_id, code="applied",
                        reference=f"order:{uuid7()}"),
            NewTransfer(id=uuid7(), amount=200, unit="USD", debit_account_id=line.wallet_account_id,
                        credit_account_id=source.id, code="refund", reference="refund:r1"),
        ], now=utcnow())

    await db.run(post)
    sign_in(client, customer)

    async def kinds(kind: str) -> list[tuple[str, str]]:
        r = await client.get("/account/records.csv", params={"kind": kind})
        assert r.status_code == 200
        return [(row[2], row[3]) for row in list(csv.reader(io.StringIO(r.text)))[1:]]

    assert await kinds("usage") == [("usage", "-300")]
    assert await kinds("topup") == [("topup", "700")]
    assert await kinds("refund") == [("refund", "-200")]
    everything = await kinds("")
    assert {("usage", "-300"), ("topup", "700"), ("refund", "-200")} <= set(everything)


def test_bars_are_classes_in_steps_of_five() -> None:
    assert bar_class(50, 100) == "w50"
    assert bar_class(0, 100) == "w0"
    assert bar_class(7, 0) == "w0"
    assert bar_class(200, 100) == "w100"


async def test_two_step_verification_from_the_security_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/security", "/account/security/totp",
                        {"password": "wrong password"})
    assert r.status_code == 401 and 'class="alert bad"' in r.text
    r = await post_form(client, "/account/security", "/account/security/totp",
                        {"password": PASSWORD})
    assert r.status_code == 200
    secret = re.search(r'data-testid="totp-key">([A-Z2-7 ]+)<', r.text)
    assert secret
    r = await client.post("/account/security/totp/confirm", data={
        "csrf": csrf_of(r.text), "code": pyotp.TOTP(secret.group(1).replace(" ", "")).now()})
    assert r.status_code == 200
    assert r.text.count("<li>") >= 10
    client.cookies.clear()
    r = await post_form(client, "/login", "/login",
                        {"login": customer.username, "password": PASSWORD})
    assert r.status_code == 200 and 'name="second_factor"' in r.text
    assert PASSWORD not in r.text
    sealed = re.search(r'name="sealed" value="([^"]+)"', r.text)
    assert sealed
    r = await client.post("/login", data={
        "csrf": csrf_of(r.text), "login": customer.username, "sealed": sealed.group(1),
        "second_factor": "000000", "next": "/account"})
    assert r.status_code == 401 and 'name="second_factor"' in r.text
    # The authenticator's code of the next step (the current one was spent on the set-up).
    code = pyotp.TOTP(secret.group(1).replace(" ", "")).at(int(time.time()) + 30)
    r = await sign_in_with_second_factor(client, customer.username, code,
                                         next_page="/account/records")
    assert r.status_code == 303 and r.headers["location"] == "/account/records"
    assert (await client.get("/account")).status_code == 200
    # The same code twice: refused.
    client.cookies.clear()
    r = await sign_in_with_second_factor(client, customer.username, code)
    assert r.status_code == 401


async def test_the_security_page_shows_sign_ins_refusals_and_alerts(
    client: httpx.AsyncClient, db: Database, settings: Settings, app: Any
) -> None:
    """Sign-in history (with the device and what was refused) and the security alerts."""
    customer = await new_customer(db, settings)
    chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
    firefox = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
    client.headers["user-agent"] = chrome
    r = await post_form(client, "/login", "/login",
                        {"login": customer.username, "password": PASSWORD})
    assert r.status_code == 303
    client.cookies.clear()
    r = await post_form(client, "/login", "/login",
                        {"login": customer.username, "password": "not the password"})
    assert r.status_code == 401
    client.headers["user-agent"] = firefox  # a device this account never used
    r = await post_form(client, "/login", "/login",
                        {"login": customer.username, "password": PASSWORD})
    assert r.status_code == 303
    await run_worker(app, db, settings)  # the alert is a notice the worker delivers
    page = (await client.get("/account/security")).text
    history = page.split('id="s-history"', 1)[1].split("</section>", 1)[0]
    alerts = page.split('id="s-alerts"', 1)[1].split("</section>", 1)[0]
    assert history.count("Sign-in from a new device") == 1
    assert "Firefox · Windows" in history and "Chrome · Linux" in history
    assert "— <strong>refused</strong>" in history
    assert "New sign-in to your account" in alerts and "No alerts." not in alerts


async def test_sessions_end_one_or_all(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    other = await new_customer(db, settings)
    sign_in(client, customer)
    r = await client.get("/account/security")
    assert "this device" in r.text
    r = await client.post(f"/account/security/sessions/{other.line.id}/end",
                          data={"csrf": csrf_of(r.text)})
    assert r.status_code == 404
    r = await post_form(client, "/account/security", "/account/security/sessions/end-all", {})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    client.cookies.set("sc_session", customer.token)
    assert (await client.get("/account")).status_code == 303


async def test_change_password_checks_the_current_one(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/security", "/account/security/password", {
        "current_password": "nope nope nope", "new_password": "another long phrase",
        "confirm_password": "another long phrase"})
    assert r.status_code == 401
    r = await post_form(client, "/account/security", "/account/security/password", {
        "current_password": PASSWORD, "new_password": "another long phrase",
        "confirm_password": "different"})
    assert r.status_code == 422
    r = await post_form(client, "/account/security", "/account/security/password", {
        "current_password": PASSWORD, "new_password": "another long phrase",
        "confirm_password": "another long phrase"})
    assert r.status_code == 303
    assert (await client.get("/account")).status_code == 200


async def test_locking_needs_the_box_ticked(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/security", "/account/security/lock", {})
    assert r.status_code == 422
    assert (await client.get("/account")).status_code == 200


async def test_a_signed_in_customer_asks_for_a_new_code(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    # Their e-mail address is verified already: nothing to send.
    r = await post_form(client, "/verify", "/verify/resend", {"channel": "email"})
    assert r.status_code == 422 and 'class="alert bad"' in r.text
    client.cookies.clear()
    r = await post_form(client, "/verify", "/verify/resend", {"channel": "email"})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/verify"


async def test_forgot_password_by_sms(
    client: httpx.AsyncClient, db: Database, deliver: object
) -> None:
    from simcharge.kit.clock import utcnow
    from tests.conftest import last_sms_code
    from tests.factories import create_account

    phone = "+14155557788"
    await db.run(lambda s: create_account(s, username="smsuser", phone=phone,
                                          phone_verified_at=utcnow()))
    r = await post_form(client, "/forgot", "/forgot", {"login": phone, "channel": "sms"})
    assert r.status_code == 303 and r.headers["location"] == "/reset?channel=sms"
    # The number is not in the URL (history, proxies, logs): the reset page has it from a cookie.
    reset_page = await client.get(r.headers["location"])
    assert f'value="{phone}"' in reset_page.text
    await deliver()  # type: ignore[operator]
    code = last_sms_code(phone)
    r = await post_form(client, r.headers["location"], "/reset", {
        "login": phone, "channel": "sms", "code": code,
        "new_password": "sunrise over the bay", "confirm_password": "sunrise over the bay"})
    assert r.status_code == 303 and r.headers["location"] == "/login?reset=1"
    assert phone not in (await client.get("/reset")).text  # forgotten once used
    r = await post_form(client, "/login", "/login",
                        {"login": "smsuser", "password": "sunrise over the bay"})
    assert r.status_code == 303 and r.headers["location"] == "/account"
    r = await post_form(client, "/forgot", "/forgot", {"login": "", "channel": "sms"})
    assert r.status_code == 422


def test_devices_are_named_by_browser_and_system() -> None:
    from simcharge.portal.web import device_label

    chrome = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0 Safari/537.36")
    iphone = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
    assert device_label(chrome) == "Chrome · Linux"
    assert device_label(iphone) == "Safari · iPhone"
    assert device_label("pytest") == "pytest"
    assert device_label(None) == "?"


async def test_notices_show_in_the_readers_language(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    from simcharge.notifications.models import Notice

    customer = await new_customer(db, settings)

    async def add(s: object) -> None:
        s.add(Notice(account_id=customer.account_id, template="account.welcome",  # type: ignore[attr-defined]
                     params={"username": customer.username}))

    await db.run(add)  # type: ignore[arg-type]
    sign_in(client, customer)
    r = await client.get("/account")
    assert "<strong>Welcome to simcharge" in r.text
    client.cookies.set("sc_lang", "es")
    r = await client.get("/account")
    assert "Te damos la bienvenida a simcharge" in r.text
    assert 'action="/account/notices/read"' in r.text
    r = await client.post("/account/notices/read", data={"csrf": csrf_of(r.text)})
    assert r.status_code == 303
    assert 'action="/account/notices/read"' not in (await client.get("/account")).text


def test_record_kinds_come_from_the_transfer_code() -> None:
    from simcharge.portal.records import kind_of

    assert kind_of("topup", True) == "topup"
    assert kind_of("grant", True) == "package"
    assert kind_of("usage", False) == "usage"
    assert kind_of("refund", False) == "refund"
    assert kind_of("transfer", False) == "transfer"
    assert kind_of("transfer_fee", False) == "transfer"
    assert kind_of("forfeit", False) == "expiry"
    assert kind_of("expiry", False) == "expiry"


def test_a_code_goes_by_sms_when_the_form_says_sms_or_phone() -> None:
    from simcharge.portal.public import _channel

    assert [_channel(v) for v in ("sms", "phone", "email", None, "fax")] == [
        "sms", "sms", "email", "email", "email"]
