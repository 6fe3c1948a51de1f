"""Creating an API key is idempotent: one key per request key (`api_keys.request_key`).

What was missing: the "create API key" form sent twice (a double click, a reload of the answer,
a browser's retry) or a retried `POST /api/v1/admin/api-keys` made two live keys, the second
one's token shown to whoever retried.

Now the form carries the page's one-time key (`idem`), and the API takes an `Idempotency-Key`
header: the first request makes the key and shows its token, once; a retry makes nothing and
never shows the token again — the form says the key was already made (409, its prefix), the API
answers `409 api-key-already-created` with the `prefix`. The same key with another request is
`422 idempotency-key-reused`. The key is the caller's: another staff member's same key is
another request. Copies sent at once make one key (on PostgreSQL the second insert waits for
the first's commit, then finds it).
"""

from __future__ import annotations

import asyncio
import re

import httpx
from sqlalchemy import func, select

from simcharge.app import create_app
from simcharge.auth.models import ApiKey
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff, web_sign_in

PAGE = "/backoffice/api-keys"
API = "/api/v1/admin/api-keys"
TOKEN = re.compile(r"sck_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")


async def keys(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(ApiKey))).scalar_one())


async def created(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "apikey.create"))).scalar_one())


def idem_on(html: str) -> str:
    form = html.split(f'action="{PAGE}" novalidate>')[1].split("</form>")[0]
    found = re.search(r'name="idem" value="([^"]+)"', form)
    assert found, "no one-time key on the new key's form"
    return found.group(1)


async def test_the_form_sent_twice_makes_one_key_and_shows_its_token_once(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    page = await client.get(PAGE)
    key = idem_on(page.text)
    form = {"csrf": csrf, "name": "billing export", "scopes": ["reports:read"], "idem": key}
    first = await client.post(PAGE, data=form)
    assert first.status_code == 200, first.text
    [token] = TOKEN.findall(first.text)
    prefix = token.split("_")[1]
    again = await client.post(PAGE, data=form)
    assert again.status_code == 409, again.text
    assert not TOKEN.search(again.text)
    assert "This API key was already created" in again.text and f"sck_{prefix}_…" in again.text
    assert 'role="alert"' in again.text
    # the form starts afresh, with another one-time key, for another key
    assert idem_on(again.text) != key and 'value="billing export"' not in again.text
    assert await keys(db) == 1 and await created(db) == 1
    # the same page key with something else asked: refused, nothing made
    r = await client.post(PAGE, data={**form, "name": "another"})
    assert r.status_code == 422 and "already used with a different request" in r.text
    assert not TOKEN.search(r.text) and 'href="#k-Idempotency-Key"' not in r.text
    assert await keys(db) == 1


async def test_a_refused_create_keeps_its_one_time_key_for_the_corrected_one(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    key = idem_on((await client.get(PAGE)).text)
    form = {"csrf": csrf, "name": "crm", "scopes": ["lines:read"], "idem": key,
            "expires_in": "forever"}
    r = await client.post(PAGE, data=form)
    assert r.status_code == 422 and idem_on(r.text) == key
    assert await keys(db) == 0
    r = await client.post(PAGE, data={**form, "expires_in": "90d"})
    assert r.status_code == 200 and len(TOKEN.findall(r.text)) == 1
    assert await keys(db) == 1


async def test_the_api_retried_with_its_key_makes_one_key(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    other = await new_staff(db, settings, "admin")
    body = {"name": "partner", "scopes": ["lines:read"], "expires_in": "30d"}
    headers = {**admin.auth, "Idempotency-Key": "make-partner-key"}
    first = await client.post(API, headers=headers, json=body)
    assert first.status_code == 201, first.text
    prefix = first.json()["key"]["prefix"]
    again = await client.post(API, headers=headers, json=body)
    assert again.status_code == 409, again.text
    problem = again.json()
    assert again.headers["content-type"].startswith("application/problem+json")
    assert problem["type"] == "/problems/api-key-already-created"
    assert problem["prefix"] == prefix and "token" not in problem
    assert not TOKEN.search(again.text)
    assert await keys(db) == 1 and await created(db) == 1
    # the key with another body
    for changed in ({"name": "partner 2"}, {"scopes": ["lines:read", "catalog:read"]},
                    {"expires_in": "31d"}, {"expires_in": None, "expires_at": None}):
        r = await client.post(API, headers=headers, json={**body, **changed})
        assert r.status_code == 422, (changed, r.text)
        assert r.json()["type"] == "/problems/idempotency-key-reused"
        assert r.json()["field"] == "Idempotency-Key"
    # the scopes in another order are the same request
    r = await client.post(API, headers=headers, json={**body, "scopes": ["lines:read"] * 2})
    assert r.status_code == 409
    # another staff member's same key is their own request
    r = await client.post(API, headers={**other.auth, "Idempotency-Key": "make-partner-key"},
                          json=body)
    assert r.status_code == 201 and TOKEN.fullmatch(r.json()["token"])
    # without a key, each request makes a key, as before
    for _ in range(2):
        r = await client.post(API, headers=admin.auth, json=body)
        assert r.status_code == 201
    assert await keys(db) == 4 and await created(db) == 4
    # a key longer than the column takes: refused, nothing made
    r = await client.post(API, headers={**admin.auth, "Idempotency-Key": "k" * 129}, json=body)
    assert r.status_code == 422 and await keys(db) == 4


async def test_copies_at_once_make_one_key(db: Database, settings: Settings) -> None:
    admin = await new_staff(db, settings, "admin")
    app = create_app(settings, db=db, run_worker=False)
    body = {"name": "race", "scopes": ["lines:read"]}
    headers = {**admin.auth, "Idempotency-Key": "at-once"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        answers = await asyncio.gather(*(c.post(API, headers=headers, json=body)
                                         for _ in range(4)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201, 409, 409, 409], [r.text for r in answers]
    assert sum(bool(TOKEN.search(r.text)) for r in answers) == 1
    assert await keys(db) == 1 and await created(db) == 1
