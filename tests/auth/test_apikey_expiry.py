"""API keys that expire, and their rotation.

What was missing: a key lived until someone revoked it, so a key leaked from a retired
integration or a laptop kept working for ever, and replacing a key meant a gap (revoke, then
deploy the new one) or a second key made by hand with the scopes copied. There was no way to
list the keys, nor to see which were still used.

- `test_an_expired_key_is_refused_as_a_revoked_one_is`: an expired key is refused on every API
  (`/api/v1`, the admin API, TMF654, Nchf) with the same 401 a revoked key gets, and logged as
  `apikey.refused` with reason `expired` (a revoked or unknown one stays `invalid`).
- `test_a_key_that_would_have_expired_already_is_not_made`: bad input, nothing written.
- `test_rotation_overlaps_then_ends_the_old_key`, `test_rotation_keeps_a_lifetime`,
  `test_only_a_live_key_is_rotated`: a new key with the old one's name and scopes; the old one
  keeps working during the overlap and not after.
- `test_the_commands`: `simcharge apikey create --expires-in/--expires-at`, `apikey list` (state,
  expiry, last use; never a secret), `apikey rotate --overlap`, with their audit entries
  (`cli:<OS user>`) and their refusals (exit 2 for bad input, 1 for no live key).
"""

from __future__ import annotations

import asyncio
import getpass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from simcharge.auth import apikeys
from simcharge.auth.apikeys import (
    RotatedKey,
    create_api_key,
    revoke_api_key,
    rotate_api_key,
    verify_api_key,
)
from simcharge.auth.models import ApiKey
from simcharge.backoffice.models import AuditEntry
from simcharge.cli import app
from simcharge.db import Database
from simcharge.errors import ValidationFailed
from simcharge.kit.clock import clock, utcnow

EVERY_API = [
    ("lines:read", "get", "/api/v1/lines?msisdn=%2B14155550101"),
    ("customers:read", "get", "/api/v1/admin/customers?q=x"),
    ("balance:read", "get", "/tmf-api/prepayBalanceManagement/v4/bucket?logicalResource.id=x"),
    ("charging", "post", "/nchf-convergedcharging/v3/chargingdata"),
]


class Recorder:
    """Stands in for `apikeys.audit` (structlog caches a module's bound logger on first use)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append({"event": event, **kw})


async def new_key(db: Database, *scopes: str, expires_at: datetime | None = None,
                  name: str = "crm") -> str:
    issued = await db.run(lambda s: create_api_key(s, name, list(scopes), expires_at=expires_at))
    return issued.token


def prefix_of(token: str) -> str:
    return token.split("_", 2)[1]


async def call(client: httpx.AsyncClient, method: str, path: str, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if method == "post":
        return await client.post(path, headers=headers, json={})
    return await client.get(path, headers=headers)


def same_refusal(r: httpx.Response) -> tuple[int, str, Any]:
    body = r.json()
    return r.status_code, r.headers.get("www-authenticate", ""), {
        k: v for k, v in body.items() if k not in ("instance", "request_id")}


@pytest.mark.parametrize(("scope", "method", "path"), EVERY_API,
                         ids=[p.split("?")[0] for _, _, p in EVERY_API])
async def test_an_expired_key_is_refused_as_a_revoked_one_is(
    client: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch,
    scope: str, method: str, path: str,
) -> None:
    soon = utcnow() + timedelta(hours=1)
    expiring = await new_key(db, scope, expires_at=soon)
    revoked = await new_key(db, scope)
    await db.run(lambda s: revoke_api_key(s, prefix_of(revoked)))
    # Used while live first: Nchf's key cache (SIMCHARGE_CHARGING_API_KEY_CACHE_SECONDS) then
    # holds it, and must still let it go at its expiry.
    live = await call(client, method, path, expiring)
    assert live.status_code not in (401, 403), live.text
    recorder = Recorder()
    monkeypatch.setattr(apikeys, "audit", recorder)
    clock.freeze(soon)
    r_expired = await call(client, method, path, expiring)
    r_revoked = await call(client, method, path, revoked)
    assert r_expired.status_code == 401, r_expired.text
    assert same_refusal(r_expired) == same_refusal(r_revoked)
    assert [(e["event"], e["reason"], e["key_prefix"]) for e in recorder.events] == [
        ("apikey.refused", "expired", prefix_of(expiring)),
        ("apikey.refused", "invalid", prefix_of(revoked)),
    ]
    assert all(e["ip"] for e in recorder.events)
    assert expiring.split("_", 2)[2] not in repr(recorder.events)


async def test_a_wrong_secret_for_an_expired_key_is_invalid(
    client: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the holder of the whole key learns (in the log) that it expired: a guess at its
    secret is `invalid`, as for a live key."""
    soon = utcnow() + timedelta(hours=1)
    token = await new_key(db, "lines:read", expires_at=soon)
    recorder = Recorder()
    monkeypatch.setattr(apikeys, "audit", recorder)
    clock.freeze(soon + timedelta(seconds=1))
    guess = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    r = await call(client, "get", EVERY_API[0][2], guess)
    assert r.status_code == 401
    assert [e["reason"] for e in recorder.events] == ["invalid"]


async def test_a_key_that_would_have_expired_already_is_not_made(db: Database) -> None:
    async def count() -> int:
        async with db.read() as s:
            return int((await s.execute(select(func.count()).select_from(ApiKey))).scalar_one())

    before = await count()
    for when in (utcnow(), utcnow() - timedelta(days=1)):
        with pytest.raises(ValidationFailed) as caught:
            await new_key(db, "lines:read", expires_at=when)
        assert caught.value.field == "expires_at"
    assert await count() == before


async def test_rotation_overlaps_then_ends_the_old_key(
    client: httpx.AsyncClient, db: Database
) -> None:
    old = await new_key(db, "lines:read", "catalog:read", name="billing")
    rotated = await db.run(lambda s: rotate_api_key(s, prefix_of(old), overlap=timedelta(hours=2)))
    assert rotated is not None
    new = rotated.issued
    assert (new.key.name, new.key.scopes) == ("billing", ["catalog:read", "lines:read"])
    assert new.key.prefix != prefix_of(old) and new.key.expires_at is None
    assert rotated.old_expires_before is None
    path = EVERY_API[0][2]
    # Let in: 404 (no such line), not 401.
    assert (await call(client, "get", path, old)).status_code == 404
    assert (await call(client, "get", path, new.token)).status_code == 404
    clock.freeze(utcnow() + timedelta(hours=2))
    assert (await call(client, "get", path, old)).status_code == 401
    assert (await call(client, "get", path, new.token)).status_code == 404
    async with db.read() as s:
        assert await verify_api_key(s, old) is None


async def test_rotation_keeps_a_lifetime(db: Database) -> None:
    """A key made for 90 days is followed by one for 90 days; an old key that was to expire
    within the overlap is not given more time; an end asked for is the new key's."""
    start = utcnow()
    old = await new_key(db, "lines:read", expires_at=start + timedelta(days=90))
    clock.freeze(start + timedelta(days=80))
    rotated = await db.run(lambda s: rotate_api_key(s, prefix_of(old)))
    assert rotated is not None and rotated.issued.key.expires_at is not None
    lifetime = rotated.issued.key.expires_at - utcnow()
    assert abs(lifetime - timedelta(days=90)) < timedelta(seconds=5)
    assert rotated.old.expires_at == utcnow() + timedelta(hours=24)
    late = await new_key(db, "lines:read", expires_at=utcnow() + timedelta(hours=1))
    asked = utcnow() + timedelta(days=7)
    again = await db.run(lambda s: rotate_api_key(s, prefix_of(late), expires_at=asked))
    assert again is not None
    assert again.old.expires_at == again.old_expires_before == utcnow() + timedelta(hours=1)
    assert again.issued.key.expires_at == asked


async def test_only_a_live_key_is_rotated(db: Database) -> None:
    revoked = await new_key(db, "lines:read")
    await db.run(lambda s: revoke_api_key(s, prefix_of(revoked)))
    expired = await new_key(db, "lines:read", expires_at=utcnow() + timedelta(minutes=1))
    clock.freeze(utcnow() + timedelta(minutes=1))
    for prefix in (prefix_of(revoked), prefix_of(expired), "000000000000"):

        async def rotate(s: AsyncSession, prefix: str = prefix) -> RotatedKey | None:
            return await rotate_api_key(s, prefix)

        assert await db.run(rotate) is None
    live = await new_key(db, "lines:read")
    with pytest.raises(ValidationFailed) as caught:
        await db.run(lambda s: rotate_api_key(s, prefix_of(live), overlap=timedelta(hours=-1)))
    assert caught.value.field == "overlap"
    async with db.read() as s:
        keys = (await s.execute(select(ApiKey).where(ApiKey.name == "crm"))).scalars().all()
    assert all(k.prefix in (prefix_of(revoked), prefix_of(expired), prefix_of(live))
               for k in keys)


# --- the commands ------------------------------------------------------------------------------

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def audit_entries(url: str) -> list[tuple[str, str | None, str, Any, Any]]:
    async def read() -> list[tuple[str, str | None, str, Any, Any]]:
        db = Database.from_url(url)
        try:
            async with db.read() as s:
                rows = (await s.execute(select(AuditEntry).order_by(AuditEntry.at))).scalars()
                return [(e.action, e.target_id, e.actor, e.before, e.after) for e in rows]
        finally:
            await db.dispose()

    return asyncio.run(read())


def test_the_commands(cli_env: str) -> None:
    actor = f"cli:{getpass.getuser()}"
    code, out = invoke("apikey", "create", "--name", "crm", "--scope", "lines:read",
                       "--expires-in", "90d")
    assert code == 0 and out.startswith("sck_"), out
    expiring = prefix_of(out.strip())
    code, out = invoke("apikey", "create", "--name", "ops", "--scope", "jobs:read",
                       "--expires-at", "2099-03-01T12:00:00+01:00")
    assert code == 0, out
    fixed = prefix_of(out.strip())
    code, out = invoke("apikey", "create", "--name", "forever", "--scope", "lines:read")
    assert code == 0, out
    forever = prefix_of(out.strip())

    code, out = invoke("apikey", "rotate", forever, "--overlap", "2h")
    assert code == 0, out
    token = out.splitlines()[0]
    assert token.startswith("sck_") and f"the key {forever} expires at" in out
    rotated = prefix_of(token)

    code, out = invoke("apikey", "list")
    assert code == 0, out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {expiring, fixed, forever, rotated}
    assert "2099-03-01 11:00 UTC" in rows[fixed] and "jobs:read" in rows[fixed]
    assert rows[rotated].split()[1:5] == ["forever", "live", "never", "never"]
    assert rows[forever].split()[2] == "live" and "UTC" in rows[forever]
    assert "sck_" not in out

    entries = audit_entries(cli_env)
    made = {e[1]: e for e in entries if e[0] == "apikey.create"}
    assert made[expiring][2] == actor
    assert set(made[expiring][4]) == {"name", "scopes", "expires_at"}
    assert made[fixed][4]["expires_at"] == "2099-03-01T11:00:00+00:00"
    assert made[forever][4] == {"name": "forever", "scopes": ["lines:read"]}
    assert made[rotated][4] == {"name": "forever", "scopes": ["lines:read"],
                                "rotated_from": forever}
    [rotation] = [e for e in entries if e[0] == "apikey.rotate"]
    assert rotation[1:4] == (forever, actor, {"expires_at": None})
    assert rotation[4]["replaced_by"] == rotated and rotation[4]["expires_at"]

    # Bad input: exit 2, the option named, nothing written; no live key: exit 1.
    for args, said in (
        (("create", "--name", "x", "--scope", "lines:read", "--expires-in", "90"),
         "--expires-in"),
        (("create", "--name", "x", "--scope", "lines:read", "--expires-in", "999999999w"),
         "--expires-in"),
        (("create", "--name", "x", "--scope", "lines:read", "--expires-at", "2099-01-01T00:00"),
         "--expires-at"),
        (("create", "--name", "x", "--scope", "lines:read", "--expires-at", "2001-01-01Z"),
         "--expires-at"),
        (("create", "--name", "x", "--scope", "lines:read", "--expires-at",
          "2000-01-01T00:00:00Z"), "expired already"),
        (("create", "--name", "x", "--scope", "lines:read", "--expires-in", "1d",
          "--expires-at", "2099-01-01T00:00:00Z"), "not both"),
        (("rotate", rotated, "--overlap", "-1h"), "--overlap"),
        (("rotate", rotated, "--expires-in", "soon"), "--expires-in"),
    ):
        code, out = invoke("apikey", *args)
        assert code == 2 and said in out, (args, out)
    code, out = invoke("apikey", "rotate", "000000000000")
    assert code == 1 and "no such key" in out
    # The old key, still live in its overlap, was replaced already: one successor a key.
    code, out = invoke("apikey", "rotate", forever)
    assert code == 2 and "already replaced" in out and "sck_" not in out, out
    assert invoke("apikey", "revoke", rotated)[0] == 0
    code, out = invoke("apikey", "rotate", rotated)
    assert code == 1 and "no live key" in out
    assert len(audit_entries(cli_env)) == len(entries) + 1  # the revocation
