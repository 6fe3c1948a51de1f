"""Lines with balances, API keys, and validation against the official TMF654 document."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft4Validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.apikeys import create_api_key
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lines.models import Bucket, Line, LineState
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units
from simcharge.tmf654.models import BalanceAction
from tests.factories import create_account, create_line

SHARED = Path(__file__).resolve().parents[3] / "shared/specs/tmf654"
PACKAGED = Path(__file__).resolve().parents[2] / "src/simcharge/tmf654/spec"
BASE = "/tmf-api/prepayBalanceManagement/v4"
MB = 1024 * 1024


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    folder = SHARED if SHARED.is_dir() else PACKAGED
    loaded: dict[str, Any] = json.loads(
        (folder / "TMF654-PrepayBalance-v4.0.0.swagger.json").read_text(encoding="utf-8")
    )
    return loaded


def assert_valid(definition: str, data: Any) -> None:
    """`data` conforms to the spec's `definition` (or, for `[X]`, is an array of X)."""
    if definition.startswith("["):
        schema: dict[str, Any] = {"type": "array",
                                  "items": {"$ref": f"#/definitions/{definition[1:-1]}"}}
    else:
        schema = {"$ref": f"#/definitions/{definition}"}
    schema["definitions"] = document()["definitions"]
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in Draft4Validator(schema).iter_errors(data)]
    assert not errors, errors


def response_schema(path: str, method: str, status: int) -> str:
    """The definition the spec names for a response, e.g. `[Bucket]`, `TopupBalance`, `Error`."""
    schema = document()["paths"][path][method]["responses"][str(status)].get("schema", {})
    if schema.get("type") == "array":
        return "[" + schema["items"]["$ref"].rsplit("/", 1)[-1] + "]"
    return str(schema["$ref"].rsplit("/", 1)[-1])


def assert_response(r: httpx.Response, path: str, method: str = "get") -> None:
    """The response's status is one the spec lists for the operation, with its schema."""
    responses = document()["paths"][path][method]["responses"]
    assert str(r.status_code) in responses, (r.status_code, r.text)
    if r.status_code != 204:
        assert_valid(response_schema(path, method, r.status_code), r.json())


@dataclass
class Holder:
    line: Line
    account_id: uuid.UUID | None
    data_bucket: uuid.UUID
    voice_bucket: uuid.UUID


async def new_holder(
    db: Database, *, wallet: int = 2000, data_mb: int = 500, currency: str = "USD",
    state: LineState = LineState.active, owned: bool = True,
) -> Holder:
    async def run(s: AsyncSession) -> Holder:
        account_id = None
        if owned:
            n = uuid.uuid4().hex[:10]
            account = await create_account(s, username=f"tm{n}", email=f"tm{n}@example.com",
                                           email_verified_at=utcnow())
            account_id = account.id
        line = await create_line(s, account_id=account_id, currency=currency, state=state)
        if wallet:
            await credit_wallet(s, line, wallet, source=f"test:{line.id}")
        data, voice = await grant_units(
            s, line, [UnitGrant("DATA_B", data_mb * MB, 30), UnitGrant("VOICE_S", 3600, 30)],
            source=f"test:{line.id}",
        )
        return Holder(line, account_id, data, voice)

    return await db.run(run)


async def api_key(db: Database, *scopes: str) -> dict[str, str]:
    issued = await db.run(lambda s: create_api_key(s, "crm", list(scopes)))
    return {"Authorization": f"Bearer {issued.token}"}


async def totals(db: Database, account_id: uuid.UUID) -> tuple[int, int]:
    """(available, reserved) of a ledger account."""
    async with db.read() as s:
        a = await s.get(LedgerAccount, account_id, populate_existing=True)
        assert a is not None
        return a.credits_posted - a.debits_posted - a.debits_pending, a.debits_pending


async def written(db: Database) -> tuple[Any, ...]:
    """Every ledger account's totals and the number of actions, buckets and ledger transfers:
    a refused request must leave them all as they were."""
    async with db.read() as s:
        rows = await s.execute(select(
            LedgerAccount.id, LedgerAccount.debits_pending, LedgerAccount.debits_posted,
            LedgerAccount.credits_pending, LedgerAccount.credits_posted))
        accounts = {tuple(row) for row in rows}
        counts = [(await s.execute(select(func.count()).select_from(model))).scalar_one()
                  for model in (BalanceAction, Bucket, LedgerTransfer)]
    return accounts, *counts
