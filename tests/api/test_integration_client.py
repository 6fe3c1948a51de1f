"""An API key's `Integration` carries its client (`ApiKey.client_id`), read with the key.

TMF654 scoped a POST's idempotency key by the key's client by looking the key up again by its
prefix (`client_of_prefix`): one more query on every POST. It reads the client from the
`Integration` now; a POST still replays across a rotation and never across clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from starlette.requests import Request

from simcharge.api.deps import Integration, require_scope
from simcharge.auth.apikeys import create_api_key, rotate_api_key
from simcharge.auth.models import ApiKey
from simcharge.db import Database
from tests.tmf654.helpers import BASE, Holder, new_holder


async def _key(db: Database, *scopes: str) -> tuple[str, str]:
    issued = await db.run(lambda s: create_api_key(s, "crm", list(scopes)))
    return issued.key.prefix, issued.token


async def _rotate(db: Database, prefix: str) -> str:
    async def run(s: Any) -> str:
        rotated = await rotate_api_key(s, prefix)
        assert rotated is not None
        return rotated.issued.token

    return await db.run(run)


def _topup(h: Holder, amount: float = 5) -> dict[str, object]:
    return {"amount": {"amount": amount, "units": "USD"}, "usageType": "monetary",
            "bucket": {"id": str(h.line.wallet_account_id)},
            "partyAccount": {"id": str(h.account_id)}}


async def _integration(db: Database, token: str, scope: str) -> Integration:
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": [],
                       "client": ("192.0.2.1", 1234), "query_string": b""})
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    found: Integration = await require_scope(scope).dependency(request, db, credentials)
    return found


async def test_the_integration_names_the_keys_client_across_a_rotation(db: Database) -> None:
    prefix, old = await _key(db, "balance:write")
    first = await _integration(db, old, "balance:write")
    new = await _rotate(db, prefix)
    second = await _integration(db, new, "balance:write")
    async with db.read() as s:
        rows = {k.prefix: k for k in (await s.execute(select(ApiKey))).scalars()}
    assert first.key_prefix == prefix and first.client_id == rows[prefix].client_id
    assert second.key_prefix != prefix and second.client_id == first.client_id
    _, other = await _key(db, "balance:write")
    assert (await _integration(db, other, "balance:write")).client_id != first.client_id


@contextmanager
def _statements() -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()).lower())

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def test_a_tmf_post_reads_the_key_once_and_scopes_by_client(
    client: httpx.AsyncClient, db: Database
) -> None:
    h = await new_holder(db, wallet=1000)
    prefix, old = await _key(db, "balance:write")
    with _statements() as seen:
        r = await client.post(f"{BASE}/topupBalance", json=_topup(h),
                              headers={"Authorization": f"Bearer {old}", "Idempotency-Key": "k"})
    assert r.status_code == 201, r.text
    by_prefix = [q for q in seen if "from api_keys" in q and "api_keys.prefix =" in q]
    assert len(by_prefix) == 1, by_prefix  # the key's check; no second look-up for its client
    # Replayed by the rotation's successor (the same client): answered, not credited again.
    new = await _rotate(db, prefix)
    again = await client.post(f"{BASE}/topupBalance", json=_topup(h),
                              headers={"Authorization": f"Bearer {new}", "Idempotency-Key": "k"})
    assert (again.status_code, again.headers.get("Idempotent-Replayed")) == (201, "true")
    assert again.json()["id"] == r.json()["id"]
    # Another client's same Idempotency-Key is its own: a second credit.
    _, other = await _key(db, "balance:write")
    theirs = await client.post(f"{BASE}/topupBalance", json=_topup(h),
                               headers={"Authorization": f"Bearer {other}", "Idempotency-Key": "k"})
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != r.json()["id"]
