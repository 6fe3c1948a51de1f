"""The sixteenth round's privacy review (GDPR, Philippine Data Privacy Act): a complete export,
closure's leftovers, less data to payment providers, and the privacy notice's setting.

What was found:
- the export (`GET /api/v1/me/export`, the portal's download) left out the lines' usage
  records, the transfers between lines given and received, and the lines' state changes;
- closure left the account's finished and dead outbox jobs holding its e-mail address, phone
  number and texts (done jobs for 7 days, dead ones 90), and the browser's `sc_device` cookie
  (730 days, never renewed) outlived both the account and the server's record of the device
  (365 days unseen);
- every payment provider was sent the number topped up (`"<plan> — +63917…"`): a gift's number
  is a third party's;
- no setting linked a privacy notice, and production started without one unsaid."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts import privacy
from simcharge.accounts.retention import kept_payload
from simcharge.config import Environment, Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lifecycle.models import LineEvent
from simcharge.lifecycle.service import unfreeze
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import credit_wallet
from simcharge.orders.models import Order
from simcharge.payments.service import DESCRIPTION_BYTES, description
from simcharge.portal.records import masked
from simcharge.tmf654.models import BalanceAction
from simcharge.worker.models import JobStatus, OutboxJob
from tests.auth.helpers import PASSWORD, Deliver, login, problem, signup
from tests.charging.helpers import nf_key
from tests.conftest import TEST_SECRET, SmtpInbox
from tests.factories import create_line, load_demo_catalog
from tests.orders.helpers import Payer, idem, new_payer, place
from tests.portal.helpers import csrf_of

HOUR = timedelta(hours=1)
FACTORY_PASSWORD = "correct horse battery"
"""The password of the accounts `tests.factories.create_account` makes (`new_payer`)."""


async def _give(client: httpx.AsyncClient, giver: Payer, line: Line, to: str, amount: int,
                reason: str) -> None:  # fmt: skip
    r = await client.post(
        f"/api/v1/me/lines/{line.id}/transfers",
        json={"to": to, "usage_type": "monetary", "amount": amount, "reason": reason},
        headers={**giver.auth, **idem()},
    )
    assert r.status_code == 201, r.text


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _use(client: httpx.AsyncClient, db: Database, records: list[tuple[Line, int, datetime]],
               prefix: str) -> None:  # fmt: skip
    """Usage through the integrators' API (`POST /api/v1/usage`): SMS, `n` messages each."""
    r = await client.post(
        "/api/v1/usage",
        json={"records": [
            {"id": f"{prefix}-{i}", "subscriber": "msisdn-" + line.msisdn.lstrip("+"),
             "service": "sms", "quantity": n, "started_at": _stamp(at), "country": "PH"}
            for i, (line, n, at) in enumerate(records)
        ]},
        headers=await nf_key(db, ("usage:write",)),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == 0, r.text


async def _second_line(db: Database, payer: Payer, state: LineState = LineState.active) -> Line:
    async def run(s: AsyncSession) -> Line:
        return await create_line(s, account_id=payer.account_id, state=state)

    return await db.run(run)


async def _export(client: httpx.AsyncClient, payer: Payer) -> dict[str, Any]:
    r = await client.get("/api/v1/me/export", headers=payer.auth)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


# --- 2. the export: usage, transfers, state changes --------------------------------------------


async def _held_since(db: Database, line: Line, at: datetime) -> None:
    """The line attached to its account at `at` (hours ago: usage arrives after it happened)."""
    await db.run(lambda s: s.execute(
        update(Line).where(Line.id == line.id).values(attached_at=at)
    ))  # fmt: skip


async def _thaw(db: Database, line_id: uuid.UUID) -> None:
    async def run(s: AsyncSession) -> None:
        line = await s.get(Line, line_id)
        assert line is not None
        await unfreeze(s, line, by="alice@staff.example", reason="customer called from Manila")

    await db.run(run)


async def test_the_export_has_the_lines_usage_transfers_and_state_changes(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await db.run(load_demo_catalog)
    me, friend = await new_payer(db, settings), await new_payer(db, settings)
    mine = await _second_line(db, me, LineState.frozen)
    now = utcnow().replace(microsecond=0)
    for line in (me.line, mine, friend.line):
        await _held_since(db, line, now - 5 * HOUR)
    await _thaw(db, mine.id)
    await db.run(lambda s: credit_wallet(s, me.line, 5000, source=f"t:{me.line.id}"))
    await db.run(lambda s: credit_wallet(s, friend.line, 5000, source=f"t:{friend.line.id}"))
    await _give(client, me, me.line, friend.line.msisdn, 500, "rent for March")
    await _give(client, me, me.line, mine.msisdn, 300, "to my tablet")
    await _give(client, friend, friend.line, me.line.msisdn, 200, "thanks, from Lola")
    await _use(client, db, [(me.line, 2, now - 2 * HOUR), (me.line, 1, now - 3 * HOUR),
                            (friend.line, 7, now - 3 * HOUR)], "u1")  # fmt: skip
    doc = await _export(client, me)

    # Usage: the account's lines' records, oldest first, in the units they were used.
    assert [(u["line"], u["service"], u["quantity"], u["country"], u["started_at"])
            for u in doc["usage"]] == [
        (me.line.msisdn, "sms", 1, "PH", (now - 3 * HOUR).isoformat()),
        (me.line.msisdn, "sms", 2, "PH", (now - 2 * HOUR).isoformat()),
    ]  # fmt: skip
    assert all(u["zone"] and u["currency"] == "USD" and u["charge"] >= 0 for u in doc["usage"])
    # Transfers: given and received; the other line in full only when it is one of mine.
    seen = sorted((t["amount"], t["direction"], t["line"], t["other_line"], t["reason"], t["fee"])
                  for t in doc["transfers"])  # fmt: skip
    masked_friend = next(t["other_line"] for t in doc["transfers"] if t["amount"] == 500)
    assert masked_friend != friend.line.msisdn and "•••" in masked_friend
    assert masked_friend == masked(friend.line.msisdn)
    assert [row[:5] for row in seen] == [
        (200, "received", me.line.msisdn, masked_friend, None),
        (300, "given", me.line.msisdn, mine.msisdn, "to my tablet"),
        (300, "received", mine.msisdn, me.line.msisdn, None),
        (500, "given", me.line.msisdn, masked_friend, "rent for March"),
    ]
    assert all(t["status"] == "completed" and t["usage_type"] == "monetary"
               for t in doc["transfers"])  # fmt: skip
    assert [row[5] for row in seen if row[1] == "received"] == [0, 0]
    # The giver's words and number are not mine to read in full.
    text = str(doc)
    assert "thanks, from Lola" not in text and friend.line.msisdn not in text
    # State changes: what, why (the reason's code), by what kind of actor — no staff name.
    assert [(e["line"], e["from_state"], e["to_state"], e["reason"], e["by"])
            for e in doc["line_events"]] == [(mine.msisdn, "frozen", "active", "support",
                                              "staff")]  # fmt: skip
    assert "alice" not in text and "Manila" not in text
    # Nothing of the friend's own usage.
    assert all(u["quantity"] != 7 for u in doc["usage"])


async def test_a_previous_holders_usage_transfers_and_changes_are_not_in_the_export(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Each line since its holder attached it (`lines.attached_at`), as the portal's records
    read them: a line's previous holder's calls, gifts and state changes are that holder's."""
    await db.run(load_demo_catalog)
    me, friend = await new_payer(db, settings), await new_payer(db, settings)
    mine = await _second_line(db, me, LineState.frozen)
    now = utcnow().replace(microsecond=0)
    await _held_since(db, me.line, now - 5 * HOUR)
    await db.run(lambda s: credit_wallet(s, me.line, 5000, source=f"t:{me.line.id}"))
    await _give(client, me, me.line, friend.line.msisdn, 500, "before")
    await _thaw(db, mine.id)
    await _use(client, db, [(me.line, 1, now - 3 * HOUR), (me.line, 4, now - HOUR)], "u2")
    # The lines changed hands two hours ago (as round 13's `_take_over` does): what was given
    # and changed before that is dated so.
    for line in (me.line, mine):
        await _held_since(db, line, now - 2 * HOUR)

    async def backdate(s: AsyncSession) -> None:
        await s.execute(update(BalanceAction).where(BalanceAction.line_id == me.line.id)
                        .values(requested_at=now - 4 * HOUR))  # fmt: skip
        await s.execute(update(LineEvent).where(LineEvent.line_id == mine.id)
                        .values(created_at=now - 4 * HOUR))  # fmt: skip

    await db.run(backdate)
    doc = await _export(client, me)
    assert [u["quantity"] for u in doc["usage"]] == [4]
    assert doc["transfers"] == [] and doc["line_events"] == []
    assert friend.line.msisdn[-4:] not in str(doc["transfers"])


async def test_the_usage_is_read_page_by_page_and_complete(
    client: httpx.AsyncClient, db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded reads: `USAGE_PAGE` rows a statement, by (`started_at`, id) — several records of
    one moment straddle a page's edge and none is lost or repeated."""
    monkeypatch.setattr(privacy, "USAGE_PAGE", 2)
    await db.run(load_demo_catalog)
    me = await new_payer(db, settings)
    now = utcnow().replace(microsecond=0)
    await _held_since(db, me.line, now - 10 * HOUR)
    await db.run(lambda s: credit_wallet(s, me.line, 5000, source=f"t:{me.line.id}"))
    await _use(client, db, [(me.line, n, now - (8 - n // 3) * HOUR) for n in range(1, 8)], "u3")
    doc = await _export(client, me)
    assert sorted(u["quantity"] for u in doc["usage"]) == [1, 2, 3, 4, 5, 6, 7]
    assert [u["started_at"] for u in doc["usage"]] == sorted(u["started_at"] for u in doc["usage"])


# --- 4. closure empties the account's finished jobs; 5. and drops the device cookie ----------


async def _jobs_of(db: Database, account_id: uuid.UUID) -> list[OutboxJob]:
    async with db.read() as s:
        jobs = (await s.execute(select(OutboxJob).order_by(OutboxJob.created_at))).scalars().all()
    return [j for j in jobs if j.payload.get("account_id") == str(account_id)]


async def test_closure_empties_the_accounts_finished_jobs_and_lets_the_confirmation_go(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    other = await signup(client, inbox, deliver)
    assert customer.email and customer.phone
    # A password change: its alert goes by e-mail and SMS, each job holding the address.
    new_password = "another horse, another battery"
    r = await client.post("/api/v1/me/password", headers=customer.auth,
                          json={"current_password": PASSWORD, "new_password": new_password})
    assert r.status_code == 200, r.text
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    await deliver()
    account_id = await _account_id(client, auth)
    me = await _jobs_of(db, account_id)
    assert all(j.status == JobStatus.done for j in me), [(j.kind, j.status) for j in me]
    assert {"notifications.email", "notifications.sms"} <= {j.kind for j in me}
    assert any(customer.email in str(j.payload) for j in me)
    assert any(customer.phone in str(j.payload) for j in me)
    # The e-mail had died (SMTP refused it for good): dead jobs wait 90 days for staff.
    dead = next(j for j in me if j.kind == "notifications.email")
    await db.run(lambda s: s.execute(
        update(OutboxJob).where(OutboxJob.id == dead.id).values(status=JobStatus.dead.value)
    ))  # fmt: skip
    others_before = {j.id: j.payload for j in await _jobs_of(
        db, await _account_id(client, other.auth))}  # fmt: skip
    assert others_before

    r = await client.post("/api/v1/me/close", json={"password": new_password}, headers=auth)
    assert r.status_code == 200, r.text
    after = await _jobs_of(db, account_id)
    finished = [j for j in after if j.id in {x.id for x in me}]
    assert len(finished) == len(me)
    assert all(j.payload_removed_at is not None for j in finished)
    assert next(j for j in finished if j.id == dead.id).status == JobStatus.dead
    assert all(j.payload == kept_payload(j.payload) for j in finished)
    assert all(customer.email not in str(j.payload) and customer.phone not in str(j.payload)
               for j in finished)  # fmt: skip
    assert any(j.payload.get("template") for j in finished)  # what it was about stays
    # The closure's confirmation is still whole, and goes out.
    pending = [j for j in after if j.status == JobStatus.pending]
    assert [j.payload["template"] for j in pending] == ["account.closed"]
    assert pending[0].payload["targets"]["email"] == customer.email
    await deliver()
    assert inbox.to(customer.email)[-1]["Subject"] == "Your simcharge account is closed"
    # Another account's jobs are untouched.
    assert {j.id: j.payload for j in await _jobs_of(
        db, await _account_id(client, other.auth))} == others_before  # fmt: skip


async def _account_id(client: httpx.AsyncClient, auth: dict[str, str]) -> uuid.UUID:
    r = await client.get("/api/v1/me", headers=auth)
    if r.status_code != 200:
        raise AssertionError(r.text)
    return uuid.UUID(r.json()["id"])


def _cookie_headers(r: httpx.Response, name: str) -> list[str]:
    return [h for h in r.headers.get_list("set-cookie") if h.startswith(f"{name}=")]


async def test_closing_through_the_api_drops_the_device_cookie(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    client.cookies.set("sc_device", "d" * 32)
    r = await client.post("/api/v1/me/close", json={"password": FACTORY_PASSWORD}, headers=payer.auth)
    assert r.status_code == 200, r.text
    dropped = _cookie_headers(r, "sc_device")
    assert len(dropped) == 1 and "max-age=0" in dropped[0].lower(), dropped
    assert "httponly" in dropped[0].lower() and "path=/" in dropped[0].lower()


async def test_closing_in_the_portal_drops_the_device_cookie(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    client.cookies.set("sc_session", payer.token)
    client.cookies.set("sc_device", "d" * 32)
    page = await client.get("/account/security")
    assert page.status_code == 200
    r = await client.post("/account/security/close", data={
        "csrf": csrf_of(page.text), "password": FACTORY_PASSWORD, "confirm": "yes"})  # fmt: skip
    assert r.status_code == 303 and r.headers["location"].endswith("/account/closed"), r.text
    assert len(_cookie_headers(r, "sc_session")) == 1
    dropped = _cookie_headers(r, "sc_device")
    assert len(dropped) == 1 and "max-age=0" in dropped[0].lower(), dropped


async def test_a_refused_closure_keeps_the_device_cookie_and_every_job(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    account_id = await _account_id(client, customer.auth)
    before = {j.id: (j.payload, j.payload_removed_at) for j in await _jobs_of(db, account_id)}
    client.cookies.set("sc_device", "d" * 32)
    r = await client.post(
        "/api/v1/me/close", json={"password": "not-the-password-1"}, headers=customer.auth
    )
    assert r.status_code == 401 and problem(r)["type"] == "/problems/invalid-credentials"
    assert problem(r)["field"] == "password"
    assert _cookie_headers(r, "sc_device") == []
    r = await client.post("/api/v1/me/close", json={}, headers=customer.auth)
    assert r.status_code == 422 and problem(r)["errors"][0]["field"] == "password"
    assert _cookie_headers(r, "sc_device") == []
    after = {j.id: (j.payload, j.payload_removed_at) for j in await _jobs_of(db, account_id)}
    assert {k: v for k, v in after.items() if k in before} == before


@pytest.mark.parametrize(("days", "age"), [(365, 365 * 86400), (30, 30 * 86400), (0, 730 * 86400)])
async def test_the_device_cookie_lives_as_long_as_the_known_device_and_is_renewed(
    db: Database, settings: Settings, inbox: SmtpInbox, deliver: Deliver, days: int, age: int
) -> None:
    """Decision: the cookie's age is `SIMCHARGE_RETENTION_DEVICES_DAYS` (730 days when devices
    are kept for ever), renewed at each sign-in: a browser in use keeps its id, one unseen
    that long loses it as the server forgets the device."""
    from simcharge.app import create_app

    tuned = settings.model_copy(update={"retention_devices_days": days})
    app = create_app(tuned, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        customer = await signup(c, inbox, deliver)
        first = await login(c, customer.username, mode="cookie")
        assert first.status_code == 200, first.text
        [set_cookie] = _cookie_headers(first, "sc_device")
        assert f"max-age={age}" in set_cookie.lower()
        device = set_cookie.split(";", 1)[0].split("=", 1)[1]
        c.cookies.set("sc_device", device)
        again = await login(c, customer.username, mode="cookie")
        assert again.status_code == 200, again.text
        [renewed] = _cookie_headers(again, "sc_device")
        assert renewed.startswith(f"sc_device={device};") and f"max-age={age}" in renewed.lower()


# --- 3. what payment providers are told -------------------------------------------------------


def _order(names: dict[str, str], language: str = "en") -> Order:
    return Order(
        reference="SC" + "A" * 26, msisdn="+14155550102", plan_code="traveller-20",
        plan_snapshot={"names": names}, language=language,
    )  # fmt: skip


def test_the_description_is_the_plan_and_our_reference_never_the_number() -> None:
    order = _order({"en": "Traveller 20", "zh-Hans": "旅行者 20"}, "zh-Hans")
    assert description(order) == f"旅行者 20 — {order.reference}"
    assert "555" not in description(order)
    assert description(_order({}, "es")) == f"traveller-20 — {order.reference}"


def test_a_long_name_is_cut_to_127_bytes_at_a_characters_edge_keeping_the_reference() -> None:
    """WeChat Pay's `description` is 127 bytes of UTF-8 (the provider cut 127 characters:
    381 bytes of Chinese); PayPal's is 127 characters, Alipay's `subject` 256."""
    order = _order({"zh-Hans": "流量包" * 60}, "zh-Hans")
    text = description(order)
    assert len(text.encode()) <= DESCRIPTION_BYTES and text.endswith(f" — {order.reference}")
    assert text.startswith("流量包") and "\ufffd" not in text
    assert len(description(_order({"en": "x" * 300})).encode()) == DESCRIPTION_BYTES


async def test_a_gifts_number_is_not_sent_to_the_provider(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """End to end through the sandbox provider, which keeps and shows what it was sent."""
    await db.run(load_demo_catalog)
    payer, friend = await new_payer(db, settings), await new_payer(db, settings)
    gift = await place(client, payer, msisdn=friend.line.msisdn)
    page = await client.get(gift["next_action"]["url"].removeprefix(settings.base_url))
    assert page.status_code == 200
    assert gift["reference"] in page.text
    digits = friend.line.msisdn.lstrip("+")
    assert friend.line.msisdn not in page.text and digits not in page.text


# --- 1. the setting ----------------------------------------------------------------------------


def _settings(**values: Any) -> Settings:
    return Settings(
        _env_file=None, secret_key=TEST_SECRET, database_url="sqlite+aiosqlite:///unused.db",
        **values,
    )


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://example.com/privacy", "https://example.com/privacy"),
        ("  /privacy  ", "/privacy"),
        ("/legal/privacy?lang=es#data", "/legal/privacy?lang=es#data"),
        ("", None),
    ],
)
def test_the_privacy_notice_is_an_https_address_or_a_path_here(given: str, kept: str) -> None:
    assert _settings(privacy_notice_url=given).privacy_notice_url == kept


@pytest.mark.parametrize(
    "given",
    ["http://example.com/privacy", "javascript:alert(1)", "//evil.example/privacy", "https://",
     "privacy.html", "/privacy notice", '/x"onmouseover=alert(1)', "/\\evil.example",
     "data:text/html,hi", "https://:443/x"],
)
def test_another_privacy_notice_address_stops_the_start(given: str) -> None:
    from pydantic import ValidationError

    from simcharge.config import settings_problems

    with pytest.raises(ValidationError) as caught:
        _settings(privacy_notice_url=given)
    [said] = settings_problems(caught.value)
    assert said.startswith("SIMCHARGE_PRIVACY_NOTICE_URL: "), said
    assert given not in said or given == "https://"


def test_the_e_mail_address_of_the_notice_is_absolute() -> None:
    assert _settings(privacy_notice_url="/privacy", base_url="https://top.example/").\
        privacy_notice_address == "https://top.example/privacy"  # fmt: skip
    assert _settings(privacy_notice_url="https://legal.example/p").privacy_notice_address == (
        "https://legal.example/p"
    )
    assert _settings().privacy_notice_address is None


@pytest.mark.parametrize(("notice", "warned"), [(None, True), ("/privacy", False)])
def test_serve_in_production_without_a_privacy_notice_says_so(
    notice: str | None, warned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from structlog.testing import capture_logs
    from typer.testing import CliRunner

    from simcharge import cli
    from simcharge.config import get_settings
    from simcharge.kit import logging as kit_logging
    from simcharge.metrics import MULTIPROC_ENV

    for name in Settings.model_fields:
        monkeypatch.delenv(f"SIMCHARGE_{name.upper()}", raising=False)
    monkeypatch.setenv("SIMCHARGE_ENV", "production")
    monkeypatch.setenv("SIMCHARGE_SECRET_KEY", "x" * 48)
    monkeypatch.setenv("SIMCHARGE_BASE_URL", "https://top.example")
    monkeypatch.setenv("SIMCHARGE_DATABASE_URL", "postgresql+asyncpg://db/simcharge")
    if notice:
        monkeypatch.setenv("SIMCHARGE_PRIVACY_NOTICE_URL", notice)
    monkeypatch.setenv(MULTIPROC_ENV, "")
    monkeypatch.delenv(MULTIPROC_ENV)
    monkeypatch.setattr(kit_logging, "configure_logging", lambda *a, **kw: None)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    monkeypatch.setattr(cli, "_run", lambda fn, **kw: None)
    get_settings.cache_clear()
    try:
        with capture_logs() as logs:
            result = CliRunner().invoke(cli.app, ["serve"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    events = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert events == (["config.no_privacy_notice"] if warned else [])


def test_development_without_a_notice_says_nothing() -> None:
    from structlog.testing import capture_logs

    from simcharge import cli

    with capture_logs() as logs:
        cli._warn_without_privacy_notice(_settings(env=Environment.development))
    assert logs == []


# --- 1. the e-mails' footer ----------------------------------------------------------------------


def _parts(mail: EmailMessage) -> tuple[str, str]:
    html, text = mail.get_body(("html",)), mail.get_body(("plain",))
    assert html is not None and text is not None
    return str(html.get_content()), str(text.get_content())


@pytest.fixture
def noticed(settings: Settings) -> Settings:
    return settings.model_copy(update={"privacy_notice_url": "/privacy"})


async def test_every_customer_e_mail_links_the_notice(
    db: Database, noticed: Settings, inbox: SmtpInbox
) -> None:
    from simcharge.app import create_app
    from simcharge.worker.runner import Worker

    app = create_app(noticed, db=db, run_worker=False)

    async def deliver() -> int:
        worker = Worker(db, noticed, concurrency=2)
        try:
            return await worker.drain()
        finally:
            await worker.close()

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        customer = await signup(c, inbox, deliver)
    assert customer.email
    mails = inbox.to(customer.email)
    assert mails
    for mail in mails:
        html, text = _parts(mail)
        assert '<a href="http://testserver/privacy"' in html and "Privacy notice" in html
        assert "Privacy notice\nhttp://testserver/privacy" in text.replace("\r\n", "\n")


async def test_without_a_notice_the_e_mails_link_none(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    assert customer.email
    for mail in inbox.to(customer.email):
        html, text = _parts(mail)
        assert "Privacy notice" not in html and "Privacy notice" not in text


def test_a_staff_members_e_mail_links_no_customer_notice() -> None:
    from simcharge.notifications.templates import render

    params = {"operator": "Op", "base_url": "https://top.example",
              "privacy_notice": "https://top.example/privacy", "username": "alice",
              "display_name": "Alice"}  # fmt: skip
    staff = render("staff.password_changed", "en", params)
    assert "privacy" not in staff.html and "privacy" not in staff.text
    customer = render("account.welcome", "es", params)
    assert 'href="https://top.example/privacy"' in customer.html
