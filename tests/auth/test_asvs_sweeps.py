"""ASVS L2 sweeps (V3 sessions, V4 access control, V7 logging, V14 HTTP), from the fifth review
round: another customer's resource is "not found" on every route taking an id, every form
refuses a post without its token, every cookie over https is prefixed, failed decisions are
logged and nothing typed by a stranger is kept in the audit log. Where a docstring says what
was wrong, it was fixed with the test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import structlog
import structlog.testing
from fastapi import FastAPI
from sqlalchemy import select

from simcharge.app import create_app
from simcharge.auth.models import Passkey
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.models import Refund, RefundState
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.conftest import TEST_SECRET
from tests.factories import load_demo_catalog
from tests.portal.helpers import Customer, csrf_of, new_customer, sign_in


@pytest.fixture
async def shop(db: Database) -> None:
    await db.run(load_demo_catalog)


def bearer(c: Customer) -> dict[str, str]:
    return {"Authorization": f"Bearer {c.token}"}


# --- (1) IDOR sweep: another customer's resource is "not found" on every route taking an id --


@dataclass
class World:
    owner: Customer
    other: Customer
    order_id: str
    ticket_id: str
    session_id: str
    bucket_id: str
    passkey_id: str
    refund_id: str


@pytest.fixture
async def world(client: httpx.AsyncClient, db: Database, settings: Settings, shop: None) -> World:
    owner = await new_customer(db, settings)
    other = await new_customer(db, settings)
    r = await client.post(
        "/api/v1/orders",
        json={"plan": "traveller-20", "method": "sandbox", "line_id": str(owner.line.id)},
        headers={**bearer(owner), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    order_id = r.json()["id"]
    r = await client.post(
        "/api/v1/me/tickets", json={"subject": "help", "body": "my data"}, headers=bearer(owner)
    )
    assert r.status_code == 201, r.text
    ticket_id = r.json()["id"]
    r = await client.get("/api/v1/me/sessions", headers=bearer(owner))
    session_id = r.json()[0]["id"]
    r = await client.get(f"/api/v1/me/lines/{owner.line.id}", headers=bearer(owner))
    assert r.status_code == 200, r.text
    from simcharge.lines.models import Bucket

    async with db.read() as s:
        bucket = (
            await s.execute(select(Bucket.id).where(Bucket.line_id == owner.line.id))
        ).scalars().first()
    passkey = Passkey(
        account_id=owner.account_id, credential_id=os.urandom(32), public_key=os.urandom(77),
        transports=["internal"], aaguid=str(uuid.UUID(int=0)), name="Owner's phone",
    )
    await db.run(lambda s: _added(s, passkey))
    # A refund of the owner's order, done: its credit note would be issued on first request.
    refund = Refund(
        order_id=uuid.UUID(order_id), reference=f"RF{uuid.uuid4().hex[:24].upper()}",
        amount=100, currency="USD", state=RefundState.succeeded.value,
        requested_by="staff:sweep", completed_at=utcnow(),
    )
    await db.run(lambda s: _added(s, refund))
    return World(owner, other, order_id, ticket_id, session_id, str(bucket), str(passkey.id),
                 str(refund.id))


async def _added(s: Any, row: Any) -> None:
    s.add(row)
    await s.flush()


# (method, path, body) — `{line}`, `{order}`, `{ticket}`, `{session}`, `{bucket}`,
# `{passkey}`, `{refund}` are the owner's; the caller is the other customer. "api" routes with
# a bearer token, "portal" ones with the session cookie and the page's CSRF token.
IDOR_CASES: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("api", "GET", "/api/v1/me/lines/{line}", None),
    ("api", "GET", "/api/v1/me/lines/{line}/transfers", None),
    ("api", "GET", "/api/v1/me/lines/{line}/transfers/terms", None),
    ("api", "POST", "/api/v1/me/lines/{line}/transfers",
     {"to": "+14155550199", "usage_type": "monetary", "amount": 100}),
    ("api", "POST", "/api/v1/me/lines/{other_line}/transfers",
     {"to": "+14155550199", "usage_type": "data", "amount": 1, "bucket_id": "{bucket}"}),
    ("api", "DELETE", "/api/v1/me/sessions/{session}", None),
    ("api", "GET", "/api/v1/me/tickets/{ticket}", None),
    ("api", "POST", "/api/v1/me/tickets/{ticket}/messages", {"body": "hello"}),
    ("api", "POST", "/api/v1/me/tickets", {"subject": "x", "body": "y", "order_id": "{order}"}),
    ("api", "POST", "/api/v1/me/tickets", {"subject": "x", "body": "y", "line_id": "{line}"}),
    ("api", "GET", "/api/v1/orders/{order}", None),
    ("api", "POST", "/api/v1/orders/{order}/cancel", None),
    ("api", "POST", "/api/v1/orders/{order}/check", None),
    ("api", "GET", "/api/v1/orders/{order}/receipt", None),
    ("api", "GET", "/api/v1/refunds/{refund}/credit-note", None),
    ("api", "POST", "/api/v1/quotes", {"plan": "traveller-20", "method": "sandbox",
                                       "line_id": "{line}"}),
    ("api", "POST", "/api/v1/orders", {"plan": "traveller-20", "method": "sandbox",
                                       "line_id": "{line}"}),
    ("portal", "GET", "/account/orders/{order}", None),
    ("portal", "GET", "/account/orders/{order}/state", None),
    ("portal", "POST", "/account/orders/{order}/check", {}),
    ("portal", "POST", "/account/orders/{order}/cancel", {}),
    ("portal", "POST", "/account/orders/{order}/help", {}),
    ("portal", "GET", "/account/help/{ticket}", None),
    ("portal", "POST", "/account/help/{ticket}/reply", {"body": "hello"}),
    ("portal", "POST", "/account/help", {"subject": "x", "body": "y", "order": "{order}"}),
    ("portal", "POST", "/account/help", {"subject": "x", "body": "y", "line": "{line}"}),
    ("portal", "GET", "/account/lines/{line}/transfer", None),
    ("portal", "GET", "/account/lines/{line}/transfer/review?what=monetary&amount=1&to=%2B14155550199",
     None),
    ("portal", "POST", "/account/lines/{line}/transfer",
     {"what": "monetary", "amount": "1", "to": "+14155550199"}),
    ("portal", "POST", "/account/security/sessions/{session}/end", {}),
    ("api", "PATCH", "/api/v1/me/passkeys/{passkey}", {"name": "taken"}),
    ("api", "POST", "/api/v1/me/passkeys/{passkey}/remove", {"password": "correct horse battery"}),
    ("portal", "POST", "/account/security/passkeys/{passkey}/rename", {"name": "taken"}),
    ("portal", "POST", "/account/security/passkeys/{passkey}/remove",
     {"password": "correct horse battery"}),
    ("portal", "GET", "/account/topup/review?line={line}&plan=traveller-20&method=sandbox", None),
]


def _fill(text: str, w: World) -> str:
    return (
        text.replace("{line}", str(w.owner.line.id))
        .replace("{other_line}", str(w.other.line.id))
        .replace("{order}", w.order_id)
        .replace("{ticket}", w.ticket_id)
        .replace("{session}", w.session_id)
        .replace("{bucket}", w.bucket_id)
        .replace("{passkey}", w.passkey_id)
        .replace("{refund}", w.refund_id)
    )


@pytest.mark.parametrize(
    ("kind", "method", "path", "body"), IDOR_CASES, ids=[f"{c[1]} {c[2]}" for c in IDOR_CASES]
)
async def test_another_customers_resource_is_not_found_everywhere(
    client: httpx.AsyncClient, db: Database, world: World,
    kind: str, method: str, path: str, body: dict[str, Any] | None,
) -> None:
    """V4.2.1 IDOR sweep: each route taking a customer resource's id answers 404 (never 403,
    never 200/3xx) when the resource is another customer's, and changes nothing."""
    url = _fill(path, world)
    filled = {k: _fill(v, world) if isinstance(v, str) else v for k, v in (body or {}).items()}
    if kind == "api":
        r = await client.request(
            method, url, json=filled if body is not None else None,
            headers={**bearer(world.other), "Idempotency-Key": uuid.uuid4().hex},
        )
    else:
        sign_in(client, world.other)
        if method == "GET":
            r = await client.get(url)
        else:
            csrf = csrf_of((await client.get("/account")).text)
            r = await client.post(url, data={"csrf": csrf, **filled})
        client.cookies.clear()
    assert r.status_code == 404, (r.status_code, r.text[:300])
    # Nothing of the owner's changed: the order still waits, the session still works.
    o = await client.get(f"/api/v1/orders/{world.order_id}", headers=bearer(world.owner))
    assert o.status_code == 200 and o.json()["state"] == "pending"
    t = await client.get(f"/api/v1/me/tickets/{world.ticket_id}", headers=bearer(world.owner))
    assert len(t.json()["messages"]) == 1
    keys = await client.get("/api/v1/me/passkeys", headers=bearer(world.owner))
    assert [(k["id"], k["name"]) for k in keys.json()] == [(world.passkey_id, "Owner's phone")]
    async with db.read() as s:
        refund = await s.get(Refund, uuid.UUID(world.refund_id))
    assert refund is not None and refund.credit_note_number is None  # no credit note issued


_SWEPT_PREFIXES = ("/api/v1/me", "/api/v1/orders", "/api/v1/refunds", "/account")


def test_the_idor_sweep_covers_every_customer_route_with_an_id(app: FastAPI) -> None:
    """Meta: a new customer route taking an id must be added to IDOR_CASES."""
    swept = {re.sub(r"\?.*", "", p) for _, _, p, _ in IDOR_CASES}
    names = {"line_id": "line", "order_id": "order", "ticket_id": "ticket",
             "session_id": "session", "passkey_id": "passkey", "refund_id": "refund"}
    missing = []
    for route in app.routes:
        path = getattr(route, "path", "")
        if not path.startswith(_SWEPT_PREFIXES) or "{" not in path:
            continue
        if path.endswith("/return"):  # documented: any caller gets the same 303, nothing asked
            continue
        generic = re.sub(r"\{(\w+)\}", lambda m: "{" + names.get(m.group(1), m.group(1)) + "}",
                         path)
        if generic not in swept:
            missing.append(path)
    assert not missing, missing


# --- (4) logging: log injection, secrets in the audit log, unlogged refusals ------------------

INJECTION_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import httpx
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from simcharge.app import create_app
    from simcharge.config import Settings

    def pem(key, private):
        if private:
            return key.private_bytes(serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
        return key.public_key().public_bytes(serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    async def main() -> None:
        merchant = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        alipay = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        settings = Settings(
            _env_file=None, env="test", secret_key=sys.argv[1], log_json=False,
            database_url="sqlite+aiosqlite:////nonexistent-directory/simcharge.db",
            worker_in_process=False, alipay_app_id="2021000000000000",
            alipay_private_key=pem(merchant, True), alipay_public_key=pem(alipay, False),
        )
        app = create_app(settings, run_worker=False)
        transport = httpx.ASGITransport(app=app)
        forged = "RSA2x\\n2026-12-06T09:00:00Z [info     ] staff.login_ok  staff=admin FORGED"
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post(
                "/api/v1/webhooks/alipay",
                data={"sign": "x", "sign_type": forged, "notify_id": "1"},
            )
        print("status", r.status_code)

    asyncio.run(main())
    """
)


def test_unauthenticated_input_cannot_forge_a_log_line() -> None:
    """V7.3.1 (log injection): in the default console log format (`SIMCHARGE_LOG_JSON=false`,
    also allowed in production) values are written raw, so a CR/LF in attacker input starts a
    new, forged log line. An unsigned Alipay notification's `sign_type` is logged verbatim in
    `payments.webhook_rejected` (`detail`), before any signature is checked."""
    done = subprocess.run(
        [sys.executable, "-c", INJECTION_SCRIPT, TEST_SECRET],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert "status" in done.stdout, done.stderr
    assert "payments.webhook_rejected" in done.stderr, done.stderr
    forged = [ln for ln in done.stderr.splitlines() if ln.startswith("2026-12-06T09:00:00Z")]
    assert not forged, done.stderr


async def test_a_password_typed_as_staff_username_is_not_kept_in_the_audit_log(
    client: httpx.AsyncClient, db: Database
) -> None:
    """V7.1.1: a failed back-office sign-in writes the typed username verbatim into the
    append-only audit log as the actor (`staff:<typed>`), shown to every admin and never
    deletable. Staff routinely type their password into the username field; an unknown name
    should be recorded as unknown (or a keyed hash), not in the clear — and CR/LF in it should
    not be kept either (log forging)."""
    typed = "amber-lantern-5531\r\nstaff.login admin"
    page = await client.get("/backoffice/login")
    r = await client.post("/backoffice/login", data={
        "username": typed, "password": "whatever", "csrf": csrf_of(page.text)})
    assert r.status_code == 401
    async with db.read() as s:
        rows = (await s.execute(select(AuditEntry).where(
            AuditEntry.action == "staff.login_failed"))).scalars().all()
    assert rows
    assert not any("amber-lantern" in (e.actor or "") + str(e.details) for e in rows), [
        e.actor for e in rows]


class Recorder:
    """Stands in for a module's structlog logger (structlog caches a module's bound logger on
    first use, so `capture_logs` would not see it)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


@pytest.mark.parametrize("token", ["sck_deadbeef0000_notakey", "made-up-staff-token"])
async def test_a_refused_admin_api_credential_is_logged(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    """V7.1.3/V7.2.1: every other API logs a refused API key (`apikey.refused`); the admin API
    refused an invalid `sck_…` key or staff token silently, so guessing against
    `/api/v1/admin/*` left no trace. Never the token itself."""
    from simcharge.auth import apikeys
    from simcharge.backoffice import deps

    recorder = Recorder()
    monkeypatch.setattr(apikeys, "audit", recorder)
    monkeypatch.setattr(deps, "audit_log", recorder)
    r = await client.get(
        "/api/v1/admin/customers?q=x", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 401
    assert [event for event, _ in recorder.events] == [
        "apikey.refused" if token.startswith("sck_") else "staff.token_refused"
    ], recorder.events
    assert token not in repr(recorder.events) and "notakey" not in repr(recorder.events)


# --- (2) sessions and cookies ------------------------------------------------------------------


def _cookies(r: httpx.Response) -> list[str]:
    return r.headers.get_list("set-cookie")


async def test_every_cookie_over_https_is_host_prefixed_secure_and_httponly(
    db: Database, settings: Settings, shop: None
) -> None:
    """V3.4.1–3.4.5: over https each cookie the site sets is Secure, HttpOnly, SameSite and
    `__Host-` prefixed (or `__Secure-` where a path is needed). The back office's login CSRF
    cookie `sc_staff_login` (double-submit token for `/backoffice/login`) has no prefix, so a
    sibling subdomain can plant it (cookie tossing) and defeat the login form's CSRF check."""
    https = settings.model_copy(update={"base_url": "https://top.example"})
    app = create_app(https, db=db, run_worker=False)
    customer = await new_customer(db, https)
    seen: list[str] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://top.example"
    ) as c:
        r = await c.get("/login")
        seen += _cookies(r)
        csrf = csrf_of(r.text)
        r = await c.post("/login", data={"csrf": csrf, "login": customer.username,
                                         "password": "correct horse battery"})
        assert r.status_code == 303, r.text
        seen += _cookies(r)
        seen += _cookies(await c.get("/language/es?next=/"))
        c.cookies.clear()
        seen += _cookies(await c.get("/backoffice/login"))
    assert seen
    bad = []
    for header in seen:
        name = header.split("=", 1)[0]
        low = header.lower()
        if "max-age=0" in low or 'expires=thu, 01 jan 1970' in low:
            continue
        ok = ("secure" in low and "httponly" in low and "samesite" in low
              and (name.startswith("__Host-") or name.startswith("__Secure-")))
        if not ok:
            bad.append(header)
    assert not bad, bad


# --- (3) CSRF on every state-changing portal and back-office form ------------------------------


def _post_routes(app: FastAPI, prefix: str) -> list[str]:
    out = []
    for route in app.routes:
        methods = getattr(route, "methods", None) or set()
        path = getattr(route, "path", "")
        if "POST" in methods and (path.startswith(prefix) if prefix else True):
            out.append(path)
    return sorted(out)


def _portal_posts() -> list[str]:
    from simcharge.portal import ROUTERS

    return sorted({r.path for router in ROUTERS for r in router.routes  # type: ignore[attr-defined]
                   if "POST" in (getattr(r, "methods", None) or set())})


@pytest.mark.parametrize("path", _portal_posts())
@pytest.mark.parametrize("token", ["none", "anonymous"])
async def test_every_portal_form_refuses_a_post_without_the_sessions_token(
    client: httpx.AsyncClient, db: Database, settings: Settings, shop: None, path: str, token: str
) -> None:
    """V4.2.2/V13: a signed-in customer's POST to any portal form without the session's CSRF
    token (none, or a signed-out visitor's token) is refused with 403 and changes nothing."""
    customer = await new_customer(db, settings)
    anonymous = csrf_of((await client.get("/login")).text)
    sign_in(client, customer)
    url = re.sub(r"\{line_id\}", str(customer.line.id), path)
    url = re.sub(r"\{\w+\}", str(uuid.uuid4()), url)
    data = {"code": "es", "confirm": "yes", "password": "correct horse battery"}
    if token == "anonymous":
        data["csrf"] = anonymous
    r = await client.post(url, data=data)
    assert r.status_code == 403, (r.status_code, r.headers.get("location"), r.text[:200])
    assert (await client.get("/account")).status_code == 200  # still signed in, not locked


def _backoffice_posts() -> list[str]:
    from simcharge.backoffice.provider_events import router as provider_events
    from simcharge.backoffice.screens import router as home
    from simcharge.backoffice.screens_admin import router as admin
    from simcharge.backoffice.screens_auth import router as auth
    from simcharge.backoffice.screens_customers import router as customers
    from simcharge.backoffice.screens_reports import router as reports
    from simcharge.backoffice.screens_tickets import router as tickets

    # (`provider_events` holds its admin API's routes too: only its page's form is swept here)
    routers = (home, admin, auth, customers, reports, tickets, provider_events)
    return sorted({r.path for router in routers
                   for r in router.routes  # type: ignore[attr-defined]
                   if "POST" in (getattr(r, "methods", None) or set())
                   and r.path.startswith("/backoffice/")  # type: ignore[attr-defined]
                   and not r.path.startswith("/backoffice/login")})  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", _backoffice_posts())
async def test_every_back_office_form_refuses_a_post_without_its_token(
    client: httpx.AsyncClient, db: Database, settings: Settings, path: str
) -> None:
    """V4.2.2: every back-office form (sign-out and language included) needs the session's
    CSRF token."""
    admin = await new_staff(db, settings, "admin", enrolled=False)
    await web_sign_in(client, admin)
    url = path.replace("{decision}", "approve").replace("{kind}", "plans").replace(
        "{code}", "traveller-20")
    url = re.sub(r"\{\w+\}", str(uuid.uuid4()), url)
    r = await client.post(url, data={"language": "es", "role": "agent", "text": "x"})
    assert r.status_code == 403, (r.status_code, r.headers.get("location"), r.text[:200])
    assert (await client.get("/backoffice")).status_code == 200


# --- (5) security headers on HTML and JSON; no-store on authenticated answers ------------------


async def test_security_headers_on_every_kind_of_answer(
    client: httpx.AsyncClient, db: Database, settings: Settings, shop: None
) -> None:
    """V14.4: nosniff, a CSP refusing framing, a Referrer-Policy, and no caching of anything
    authenticated, on pages, errors, redirects, JSON, problems, files."""
    customer = await new_customer(db, settings)
    staff = await new_staff(db, settings, "admin")
    anon: list[tuple[str, dict[str, str]]] = [
        ("/", {}), ("/login", {}), ("/nope", {"accept": "text/html"}), ("/nope", {}),
        ("/api/v1/plans", {}), ("/api/v1/me", {}), ("/backoffice/login", {}),
        ("/backoffice", {}), ("/docs", {}), ("/openapi.json", {}),
        ("/static/portal/portal.js", {}), ("/assets/theme.css", {}),
        ("/language/es?next=/", {}), ("/problems/not-found", {}),
    ]
    problems = []
    for path, headers in anon:
        r = await client.get(path, headers=headers)
        h = r.headers
        if h.get("x-content-type-options") != "nosniff":
            problems.append((path, "nosniff"))
        if "frame-ancestors 'none'" not in h.get("content-security-policy", ""):
            problems.append((path, "frame-ancestors", h.get("content-security-policy")))
        if not h.get("referrer-policy"):
            problems.append((path, "referrer-policy"))
    sign_in(client, customer)
    for path in ("/account", "/account/security", "/account/records.csv",
                 f"/account/orders/{uuid.uuid4()}", "/account/topup"):
        r = await client.get(path)
        if "no-store" not in r.headers.get("cache-control", ""):
            problems.append((path, "cache-control", r.headers.get("cache-control")))
        if "frame-ancestors 'none'" not in r.headers.get("content-security-policy", ""):
            problems.append((path, "frame-ancestors"))
    client.cookies.clear()
    for path in ("/api/v1/me", "/api/v1/me/sessions", "/api/v1/orders"):
        r = await client.get(path, headers=bearer(customer))
        if "no-store" not in r.headers.get("cache-control", ""):
            problems.append((path, "cache-control"))
    for path in ("/api/v1/admin/customers?q=a", "/api/v1/admin/staff"):
        r = await client.get(path, headers=staff.auth)
        if "no-store" not in r.headers.get("cache-control", ""):
            problems.append((path, "cache-control"))
    assert not problems, problems


# --- (6) open redirects ---------------------------------------------------------------------------

NEXT_PAYLOADS = [
    "//evil.example", "/\\evil.example", "\\\\evil.example", "https://evil.example",
    "/\t/evil.example", "/%09/evil.example", "/\n/evil.example", "http:evil.example",
    "/ /evil.example", "\x0b//evil.example", " //evil.example", "/.//evil.example",
    "//evil.example/%2f..", "/\\/evil.example", "javascript:alert(1)", "/%5C%5Cevil.example",
]


def _offsite(location: str) -> bool:
    # What a browser does with it: tabs/newlines dropped, backslashes read as slashes.
    cleaned = location.strip(" \x00\x0b\x0c").replace("\t", "").replace("\n", "").replace(
        "\r", "").replace("\\", "/").replace("%5C", "/").replace("%5c", "/")
    parts = urlsplit(httpx.URL("https://shop.example/here").join(cleaned).__str__())
    return parts.hostname != "shop.example"


@pytest.mark.parametrize("payload", NEXT_PAYLOADS)
async def test_next_never_leaves_the_site(
    client: httpx.AsyncClient, db: Database, settings: Settings, payload: str
) -> None:
    """V5.1.5: `next=` (language link, sign-in form, signed-in language form, sign-in page
    when already signed in) only ever redirects within the site."""
    locations = []
    r = await client.get("/language/es", params={"next": payload})
    locations.append(r.headers.get("location", ""))
    customer = await new_customer(db, settings)
    page = await client.get("/login")
    r = await client.post("/login", data={"csrf": csrf_of(page.text), "login": customer.username,
                                          "password": "correct horse battery", "next": payload})
    locations.append(r.headers.get("location", ""))
    r = await client.get("/login", params={"next": payload})
    locations.append(r.headers.get("location", ""))
    csrf = csrf_of((await client.get("/account")).text)
    r = await client.post("/language", data={"csrf": csrf, "code": "en", "next": payload})
    locations.append(r.headers.get("location", ""))
    assert all(loc for loc in locations), locations
    assert not [loc for loc in locations if _offsite(loc)], locations


async def test_api_json_answers_say_they_are_a_download(client: httpx.AsyncClient) -> None:
    """V14.4.2 (L1): every API response carries `Content-Disposition: attachment;
    filename="api.json"` (or another fitting name), so a browser navigated to an API URL
    never renders it inline. None of the JSON API's answers (data or problem) carries one."""
    missing = []
    for path in ("/api/v1/plans", "/api/v1/me", "/api/v1/payment-methods", "/openapi.json"):
        r = await client.get(path)
        if "attachment" not in r.headers.get("content-disposition", ""):
            missing.append((path, r.status_code))
    assert not missing, missing


# --- (4b) failed access-control decisions are logged -----------------------------------------


async def _events_of(db: Database, account_id: uuid.UUID) -> list[Any]:
    from simcharge.auth.models import SecurityEvent

    async with db.read() as s:
        return list((await s.execute(select(SecurityEvent).where(
            SecurityEvent.account_id == account_id))).scalars())


async def test_a_portal_form_refused_for_its_csrf_token_is_in_the_security_log(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """V7.2.2 / V7.1.3: the API writes a `csrf_refused` security event for a cookie write
    without its token (README), the portal's forms refuse the same silently — a cross-site
    attack on the portal leaves no trace, in the customer's log or anywhere."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    before = len(await _events_of(db, customer.account_id))
    r = await client.post("/account/security/lock", data={"csrf": "forged", "confirm": "yes"})
    assert r.status_code == 403
    after = await _events_of(db, customer.account_id)
    assert [e.kind for e in after[before:]] == ["csrf_refused"], [e.kind for e in after]


async def test_reaching_for_another_customers_order_is_logged(
    client: httpx.AsyncClient, db: Database, world: World
) -> None:
    """V7.2.2 (L2: "all failed [access control] decisions are logged"): asking for another
    customer's order or line answers 404 as it should, and now an `access.denied` line says who
    reached for what (staff refusals are audited as `access.denied` too); nothing was recorded
    before, so id-guessing went unseen. A made-up id is not a decision: nothing is logged."""
    with structlog.testing.capture_logs() as logs:
        for path in (f"/api/v1/orders/{world.order_id}", f"/api/v1/me/lines/{world.owner.line.id}"):
            r = await client.get(path, headers=bearer(world.other))
            assert r.status_code == 404
        r = await client.get(f"/api/v1/orders/{uuid.uuid4()}", headers=bearer(world.other))
        assert r.status_code == 404
    denied = [(e["resource"], e["resource_id"]) for e in logs if e["event"] == "access.denied"]
    assert denied == [("order", world.order_id), ("line", str(world.owner.line.id))], logs
    assert all(
        e["account_id"] == str(world.other.account_id) for e in logs if e["event"] == "access.denied"
    )
