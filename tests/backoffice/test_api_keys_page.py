"""API keys in the back office: `/backoffice/api-keys` and `/api/v1/admin/api-keys…`.

What was missing: API keys could be seen and managed only with `simcharge apikey …` on a server's
command line. An operator's admin had no way to see which keys exist, which are still used,
which expired or were replaced, nor to revoke a leaked one or rotate one, without shell access.

Now (permission `apikeys.manage`, admins only; no API-key scope grants it):
- `test_only_admins_manage_keys`: agents and finance are refused the page and the API (403, an
  `access.denied` audit entry) and have no link; an API key holding every scope is refused too.
- `test_the_page_lists_the_keys_the_command_line_made`: every key, newest first, with its state,
  expiry, last use and the rotation that replaced it; never a secret or a hash.
- `test_a_key_made_on_the_page_is_shown_once_and_works`: the token only on the form's answer
  (no-store, not in a URL, not logged), audited as `apikey.create` without a secret.
- `test_rotation_on_the_page_overlaps_then_ends_the_old_key`,
  `test_revoking_on_the_page_needs_the_confirmation_and_ends_the_key`: what the commands do,
  audited alike (`apikey.rotate`, `apikey.revoke`); a key already replaced is not rotated again
  by staff (a reloaded answer would have made a second live key nobody holds).
- `test_a_form_without_its_csrf_token_changes_nothing`,
  `test_bad_input_is_a_form_error_and_changes_nothing`, `test_rotate_and_revoke_refusals`:
  refusals on the form (and as problem+json through the API), nothing written.
- `test_the_admin_api`: the same through `/api/v1/admin/api-keys` with a staff token;
  problem+json with its field for bad input.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import func, select
from typer.testing import CliRunner

from simcharge.app import create_app
from simcharge.auth.apikeys import SCOPES, create_api_key
from simcharge.auth.models import ApiKey
from simcharge.backoffice.models import AuditEntry
from simcharge.cli import app as cli_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from tests.backoffice.helpers import new_staff, web_sign_in

PAGE = "/backoffice/api-keys"
API = "/api/v1/admin/api-keys"
LET_IN = "/api/v1/lines?msisdn=%2B14155550101"
"""A `lines:read` request: 404 (no such line) when the key lets it in, 401 when not."""


def prefix_of(token: str) -> str:
    return token.split("_", 2)[1]


SECRET = re.compile(r"sck_[0-9a-f]{12}_[A-Za-z0-9_-]")
"""A whole key (a prefix shown as `sck_<prefix>_…` is not one)."""


def token_on(html: str) -> str:
    found: list[str] = re.findall(r"sck_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}", html)
    assert len(found) == 1, found
    return found[0]


async def lets_in(client: httpx.AsyncClient, token: str) -> bool:
    r = await client.get(LET_IN, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code in (401, 404), r.text
    return r.status_code == 404


async def new_key(db: Database, *scopes: str, name: str = "crm") -> str:
    issued = await db.run(lambda s: create_api_key(s, name, list(scopes)))
    return issued.token


async def key_count(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(ApiKey))).scalar_one())


async def key_row(db: Database, prefix: str) -> ApiKey:
    async with db.read() as s:
        return (await s.execute(select(ApiKey).where(ApiKey.prefix == prefix))).scalar_one()


async def key_audit(db: Database) -> list[AuditEntry]:
    async with db.read() as s:
        return list(
            (
                await s.execute(
                    select(AuditEntry)
                    .where(AuditEntry.action.like("apikey.%"))
                    .order_by(AuditEntry.at, AuditEntry.id)
                )
            ).scalars()
        )


async def denials(db: Database, actor: str) -> list[str]:
    async with db.read() as s:
        rows = (
            await s.execute(
                select(AuditEntry).where(
                    AuditEntry.action == "access.denied", AuditEntry.actor == actor
                )
            )
        ).scalars()
        return sorted(r.details["permission"] for r in rows)


def no_secret_in(entries: list[AuditEntry], *secrets: str) -> None:
    text = json.dumps([[e.before, e.after, e.details] for e in entries])
    for secret in secrets:
        assert secret not in text


# --- who may --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["agent", "finance"])
async def test_only_admins_manage_keys(
    client: httpx.AsyncClient, db: Database, settings: Settings, role: str
) -> None:
    token = await new_key(db, "lines:read")
    staff = await new_staff(db, settings, role)
    # the admin API: refused with a staff token of this role…
    for method, path in (
        ("GET", API),
        ("POST", API),
        ("POST", f"{API}/{prefix_of(token)}/rotate"),
        ("POST", f"{API}/{prefix_of(token)}/revoke"),
    ):
        body = {"name": "x", "scopes": ["lines:read"]} if path == API else {}
        r = await client.request(
            method, path, headers=staff.auth, json=body if method == "POST" else None
        )
        assert r.status_code == 403, (path, r.text)
        assert r.json()["type"] == "/problems/forbidden"
    # …and the page, with no link to it
    csrf = await web_sign_in(client, staff)
    home = await client.get("/backoffice")
    assert PAGE not in home.text
    r = await client.get(PAGE)
    assert r.status_code == 403 and "You are not allowed to do this." in r.text
    for path, data in (
        (PAGE, {"csrf": csrf, "name": "x", "scopes": "lines:read"}),
        (f"{PAGE}/{prefix_of(token)}/rotate", {"csrf": csrf, "overlap": "1h"}),
        (f"{PAGE}/{prefix_of(token)}/revoke", {"csrf": csrf, "confirm": "yes"}),
    ):
        r = await client.post(path, data=data)
        assert r.status_code == 403, path
    assert await denials(db, f"staff:{staff.username}") == ["apikeys.manage"] * 8
    assert await key_count(db) == 1 and await lets_in(client, token)
    assert await key_audit(db) == []

    # An API key with every scope never manages keys.
    every = await new_key(db, *SCOPES, name="everything")
    r = await client.get(API, headers={"Authorization": f"Bearer {every}"})
    assert r.status_code == 403
    r = await client.post(
        f"{API}/{prefix_of(token)}/revoke", headers={"Authorization": f"Bearer {every}"}
    )
    assert r.status_code == 403 and await lets_in(client, token)
    assert await denials(db, f"apikey:{prefix_of(every)}") == ["apikeys.manage"] * 2


async def test_an_admin_has_the_link_and_the_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    await web_sign_in(client, admin)
    home = await client.get("/backoffice")
    assert f'href="{PAGE}"' in home.text
    r = await client.get(PAGE)
    assert r.status_code == 200 and "no-store" in r.headers["cache-control"]
    # in the staff member's language (the page's own words go through gettext)
    r = await client.get(PAGE, params={"lang": "es"})
    assert r.status_code == 200 and 'lang="es"' in r.text


# --- the page lists what the command line made -----------------------------------------------

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(cli_app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


async def test_the_page_lists_the_keys_the_command_line_made(
    cli_env: str, settings: Settings
) -> None:
    async def cli(*args: str) -> str:
        return await asyncio.to_thread(invoke, "apikey", *args)

    crm = prefix_of((await cli("create", "--name", "crm", "--scope", "lines:read",
                               "--scope", "catalog:read", "--expires-in", "90d")).strip())
    ops = prefix_of((await cli("create", "--name", "ops", "--scope", "jobs:read")).strip())
    gone = prefix_of((await cli("create", "--name", "gone", "--scope", "lines:read")).strip())
    rotated_out = await cli("rotate", ops, "--overlap", "2h")
    new_ops = prefix_of(rotated_out.splitlines()[0])
    await cli("revoke", gone)

    cli_db = Database.from_url(cli_env)
    try:
        admin = await new_staff(cli_db, settings, "admin")
        app = create_app(settings, db=cli_db, run_worker=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            await web_sign_in(c, admin)
            page = (await c.get(PAGE)).text
            r = await c.get(API, headers=admin.auth)
        async with cli_db.read() as s:
            hashes = [k.secret_hash for k in (await s.execute(select(ApiKey))).scalars()]
    finally:
        await cli_db.dispose()

    rows = re.findall(r'data-testid="key-([0-9a-f]+)"', page)
    assert rows == [new_ops, gone, ops, crm]  # newest first
    states = dict(re.findall(r'data-testid="state-([0-9a-f]+)"><span class="badge">(\w+)', page))
    assert states == {new_ops: "live", gone: "revoked", ops: "live", crm: "live"}
    row = {p: page.split(f'data-testid="key-{p}"', 1)[1].split("</tr>", 1)[0] for p in rows}
    assert "<code>catalog:read</code>, <code>lines:read</code>" in row[crm]
    assert f"replaced by <code>{new_ops}</code>" in row[ops]
    assert f"replaces <code>{ops}</code>" in row[new_ops]
    assert "never" in row[gone]  # never expires, never used
    assert not SECRET.search(page)  # prefixes only, never a secret
    assert not any(h in page for h in hashes)

    assert r.status_code == 200
    listed = {k["prefix"]: k for k in r.json()}
    assert [k["prefix"] for k in r.json()] == rows
    assert listed[ops]["replaced_by"] == new_ops and listed[new_ops]["replaces"] == ops
    assert listed[ops]["expires_at"] is not None and listed[gone]["state"] == "revoked"
    assert listed[crm]["scopes"] == ["catalog:read", "lines:read"]
    assert not any(h in r.text for h in hashes) and "secret" not in r.text


# --- create, rotate, revoke on the page ------------------------------------------------------


async def test_a_key_made_on_the_page_is_shown_once_and_works(
    client: httpx.AsyncClient, db: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    with structlog.testing.capture_logs() as logs:
        r = await client.post(
            PAGE,
            data={"csrf": csrf, "name": "billing", "scopes": ["lines:read", "catalog:read"],
                  "expires_in": "90d", "expires_at": ""},
        )
    assert r.status_code == 200, r.text
    assert "no-store" in r.headers["cache-control"]
    assert not r.history  # answered in place: the token was never in a URL
    token = token_on(r.text)
    assert token not in str(r.url)
    assert token not in json.dumps(logs, default=str) and token not in caplog.text
    assert await lets_in(client, token)

    key = await key_row(db, prefix_of(token))
    assert (key.name, key.scopes) == ("billing", ["catalog:read", "lines:read"])
    assert key.expires_at is not None
    assert abs(key.expires_at - (utcnow() + timedelta(days=90))) < timedelta(minutes=1)
    # never again: the list shows the prefix only
    page = (await client.get(PAGE)).text
    assert token not in page and f'data-testid="key-{key.prefix}"' in page
    [entry] = await key_audit(db)
    assert (entry.action, entry.actor, entry.target_type, entry.target_id) == (
        "apikey.create", f"staff:{admin.username}", "api_key", key.prefix)
    assert entry.after == {"name": "billing", "scopes": ["catalog:read", "lines:read"],
                           "expires_at": key.expires_at.isoformat()}
    no_secret_in([entry], token, key.secret_hash)


async def test_rotation_on_the_page_overlaps_then_ends_the_old_key(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    old = await new_key(db, "lines:read", name="billing")
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    r = await client.post(f"{PAGE}/{prefix_of(old)}/rotate", data={"csrf": csrf, "overlap": "1h"})
    assert r.status_code == 200, r.text
    assert "no-store" in r.headers["cache-control"] and not r.history
    new = token_on(r.text)
    assert 'data-testid="old-key"' in r.text and prefix_of(old) in r.text
    assert await lets_in(client, old) and await lets_in(client, new)
    fresh = await key_row(db, prefix_of(new))
    assert (fresh.name, fresh.scopes, fresh.expires_at) == ("billing", ["lines:read"], None)
    ends = (await key_row(db, prefix_of(old))).expires_at
    assert ends is not None and abs(ends - (utcnow() + timedelta(hours=1))) < timedelta(minutes=1)

    made, rotation = await key_audit(db)
    actor = f"staff:{admin.username}"
    assert (made.action, made.actor, made.target_id) == ("apikey.create", actor, prefix_of(new))
    assert made.after == {"name": "billing", "scopes": ["lines:read"],
                          "rotated_from": prefix_of(old)}
    assert (rotation.action, rotation.actor, rotation.target_id) == (
        "apikey.rotate", actor, prefix_of(old))
    assert rotation.before == {"expires_at": None}
    assert rotation.after == {"expires_at": ends.isoformat(), "replaced_by": prefix_of(new)}
    no_secret_in([made, rotation], old, new)
    page = (await client.get(PAGE)).text
    assert f"replaced by <code>{prefix_of(new)}</code>" in page and new not in page
    assert f'action="{PAGE}/{prefix_of(old)}/rotate"' not in page  # replaced: not offered again

    # The answer reloaded (the form sent again), or the API asked as well: one successor only.
    r = await client.post(f"{PAGE}/{prefix_of(old)}/rotate", data={"csrf": csrf, "overlap": "7d"})
    assert r.status_code == 409 and "This key was already replaced" in r.text
    assert not SECRET.search(r.text)
    r = await client.post(f"{API}/{prefix_of(old)}/rotate", headers=admin.auth, json={})
    assert r.status_code == 409 and r.json()["type"] == "/problems/api-key-already-replaced"
    assert await key_count(db) == 2 and len(await key_audit(db)) == 2
    assert (await key_row(db, prefix_of(old))).expires_at == ends

    clock.freeze(utcnow() + timedelta(hours=1))
    assert not await lets_in(client, old)
    assert await lets_in(client, new)


async def test_revoking_on_the_page_needs_the_confirmation_and_ends_the_key(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    token = await new_key(db, "lines:read")
    prefix = prefix_of(token)
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    # without the box ticked: the form says so, the key still works
    r = await client.post(f"{PAGE}/{prefix}/revoke", data={"csrf": csrf})
    assert r.status_code == 422
    assert "Tick the box to confirm that this key stops working now." in r.text
    assert await lets_in(client, token) and await key_audit(db) == []

    r = await client.post(f"{PAGE}/{prefix}/revoke", data={"csrf": csrf, "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == f"{PAGE}?done=revoked"
    assert not await lets_in(client, token)
    page = await client.get(r.headers["location"])
    assert "The key was revoked" in page.text
    assert re.search(rf'data-testid="state-{prefix}"><span class="badge">revoked', page.text)
    [entry] = await key_audit(db)
    assert (entry.action, entry.actor, entry.target_id) == (
        "apikey.revoke", f"staff:{admin.username}", prefix)
    assert entry.before == {"state": "live", "expires_at": None}
    assert entry.after is not None and entry.after["state"] == "revoked"
    # again: nothing to revoke
    r = await client.post(f"{PAGE}/{prefix}/revoke", data={"csrf": csrf, "confirm": "yes"})
    assert r.status_code == 404 and "No live API key has this prefix." in r.text
    assert len(await key_audit(db)) == 1


# --- refusals ---------------------------------------------------------------------------------


async def test_a_form_without_its_csrf_token_changes_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    token = await new_key(db, "lines:read")
    prefix = prefix_of(token)
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    for path, data in (
        (PAGE, {"name": "x", "scopes": "lines:read"}),
        (f"{PAGE}/{prefix}/rotate", {"overlap": "1h"}),
        (f"{PAGE}/{prefix}/revoke", {"confirm": "yes"}),
    ):
        for forged in ({}, {"csrf": "forged"}, {"csrf": csrf[:-2] + "xx"}):
            r = await client.post(path, data={**data, **forged})
            assert r.status_code == 403, (path, forged)
            assert not SECRET.search(r.text)
    assert await key_count(db) == 1
    assert (await key_row(db, prefix)).expires_at is None
    assert await lets_in(client, token) and await key_audit(db) == []


BAD_CREATE = [
    ({"name": "x", "scopes": ["lines:read", "no:such"]}, 422, "scopes", "Unknown scope(s): no:such."),
    ({"name": "x", "scopes": ["lines:read"], "expires_at": "2000-01-01T00:00:00Z"}, 422,
     "expires_at", "The key would have expired already."),
    ({"name": "   ", "scopes": ["lines:read"]}, 422, "name", "A key needs a name."),
    ({"name": "x" * 81, "scopes": ["lines:read"]}, 422, "name", "At most 80 characters"),
    ({"name": "x", "scopes": []}, 422, "scopes", "Choose at least one scope."),
    ({"name": "x", "scopes": ["lines:read"], "expires_in": "90"}, 422, "expires_in",
     "A whole number of minutes, hours, days or weeks"),
    ({"name": "x", "scopes": ["lines:read"], "expires_at": "2099-01-01T00:00"}, 422,
     "expires_at", "A time zone is required."),
    ({"name": "x", "scopes": ["lines:read"], "expires_in": "1d",
      "expires_at": "2099-01-01T00:00:00Z"}, 422, "expires_at",
     "Give a lifetime or a moment, not both."),
    ({"name": "x", "scopes": ["balance:adjust"]}, 403, "scopes",
     "Only the server&#39;s command line makes or rotates a key with this scope."),
]


@pytest.mark.parametrize(
    ("form", "status", "field", "said"), BAD_CREATE,
    ids=["unknown-scope", "past-expiry", "empty-name", "long-name", "no-scope", "bad-lifetime",
         "no-zone", "both-expiries", "balance-adjust"],
)
async def test_bad_input_is_a_form_error_and_changes_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings,
    form: dict[str, Any], status: int, field: str, said: str,
) -> None:
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    r = await client.post(PAGE, data={"csrf": csrf, **form})
    assert r.status_code == status, r.text
    assert f'id="k-{field}-error"' in r.text and said in r.text
    assert f'aria-describedby="k-{field}-error"' in r.text
    assert not SECRET.search(r.text)
    # what was typed is kept
    if form["name"].strip():
        assert f'value="{form["name"]}"' in r.text
    for scope in form["scopes"]:
        if scope in SCOPES and scope != "balance:adjust":
            assert f'value="{scope}" checked' in r.text
    assert await key_count(db) == 0 and await key_audit(db) == []
    # the API refuses the same, with its problem type and field
    body = {**form, "expires_in": form.get("expires_in") or None,
            "expires_at": form.get("expires_at") or None}
    r = await client.post(API, headers=admin.auth, json=body)
    assert r.status_code == status, r.text
    problem = r.json()
    assert problem["field"] == field
    assert problem["type"] == (
        "/problems/validation-error" if status == 422
        else "/problems/api-key-scope-command-line-only")
    assert await key_count(db) == 0 and await key_audit(db) == []


async def test_rotate_and_revoke_refusals(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    token = await new_key(db, "lines:read")
    prefix = prefix_of(token)
    adjusting = await new_key(db, "balance:adjust", name="tmf")
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    page = (await client.get(PAGE)).text
    assert f'action="{PAGE}/{prefix}/rotate"' in page
    assert f'action="{PAGE}/{prefix_of(adjusting)}/rotate"' not in page  # not offered
    for path, data, status, said in (
        (f"{PAGE}/{prefix}/rotate", {"overlap": "2h"}, 422, "Choose one of: 1h, 24h, 7d."),
        (f"{PAGE}/{prefix}/rotate", {}, 422, "Choose one of: 1h, 24h, 7d."),
        (f"{PAGE}/000000000000/rotate", {"overlap": "1h"}, 404, "No live API key"),
        (f"{PAGE}/000000000000/revoke", {"confirm": "yes"}, 404, "No live API key"),
        (f"{PAGE}/{prefix_of(adjusting)}/rotate", {"overlap": "1h"}, 403,
         "Only the server&#39;s command line"),
    ):
        r = await client.post(path, data={"csrf": csrf, **data})
        assert r.status_code == status, (path, r.text)
        assert said in r.text and 'role="alert"' in r.text
    for path, body, status, slug, field in (
        (f"{API}/{prefix}/rotate", {"overlap": "2h"}, 422, "validation-error", "overlap"),
        (f"{API}/{prefix}/rotate", {"overlap": "1h", "x": 1}, 422, "validation-error", "x"),
        (f"{API}/000000000000/rotate", {}, 404, "api-key-not-found", "prefix"),
        (f"{API}/000000000000/revoke", None, 404, "api-key-not-found", "prefix"),
        (f"{API}/{prefix_of(adjusting)}/rotate", {}, 403, "api-key-scope-command-line-only",
         "scopes"),
    ):
        r = await client.post(path, headers=admin.auth, json=body)
        assert r.status_code == status, (path, r.text)
        assert r.json()["type"] == f"/problems/{slug}" and r.json()["field"] == field, r.text
    assert await key_count(db) == 2 and await key_audit(db) == []
    assert (await key_row(db, prefix)).expires_at is None
    assert (await key_row(db, prefix_of(adjusting))).expires_at is None
    assert await lets_in(client, token)


# --- the admin API -----------------------------------------------------------------------------


async def test_the_admin_api(client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    admin = await new_staff(db, settings, "admin")
    actor = f"staff:{admin.username}"
    with structlog.testing.capture_logs() as logs:
        r = await client.post(
            API, headers=admin.auth,
            json={"name": "erp", "scopes": ["lines:read"], "expires_at": "2099-03-01T12:00:00+01:00"},
        )
    assert r.status_code == 201, r.text
    assert "no-store" in r.headers["cache-control"]
    made = r.json()
    token = made["token"]
    assert token not in json.dumps(logs, default=str)
    assert made["key"]["prefix"] == prefix_of(token) and made["key"]["state"] == "live"
    assert made["key"]["expires_at"].startswith("2099-03-01T11:00:00")
    assert await lets_in(client, token)

    r = await client.post(f"{API}/{prefix_of(token)}/rotate", headers=admin.auth,
                          json={"overlap": "7d"})
    assert r.status_code == 200, r.text
    rotated = r.json()
    new = rotated["token"]
    assert rotated["key"]["replaces"] == prefix_of(token)
    assert rotated["replaced"]["replaced_by"] == prefix_of(new)
    assert await lets_in(client, token) and await lets_in(client, new)

    r = await client.get(API, headers=admin.auth)
    assert [k["prefix"] for k in r.json()] == [prefix_of(new), prefix_of(token)]
    assert token not in r.text and new not in r.text

    r = await client.post(f"{API}/{prefix_of(token)}/revoke", headers=admin.auth)
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert not await lets_in(client, token) and await lets_in(client, new)

    entries = await key_audit(db)
    assert [(e.action, e.actor, e.target_id) for e in entries] == [
        ("apikey.create", actor, prefix_of(token)),
        ("apikey.create", actor, prefix_of(new)),
        ("apikey.rotate", actor, prefix_of(token)),
        ("apikey.revoke", actor, prefix_of(token)),
    ]
    no_secret_in(entries, token, new)
    # bad bodies: 422 with the field, nothing written
    for body, field in (({"scopes": ["lines:read"]}, "name"), ({"name": "x"}, "scopes"),
                        ({"name": "x", "scopes": ["lines:read"], "secret": "y"}, "secret")):
        r = await client.post(API, headers=admin.auth, json=body)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert len(await key_audit(db)) == 4 and await key_count(db) == 2
