"""Charging test helpers: a line with buckets and money, an Nchf client checked against the spec."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.auth.apikeys import create_api_key
from simcharge.catalog.service import DEMO_CATALOG, load_catalog, parse_catalog
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.ledger.models import LedgerAccount, LedgerTransfer, PendingStatus
from simcharge.lines.models import Line
from simcharge.lines.schemas import LineBalances
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units, line_balances
from tests.factories import create_account, create_line, load_demo_catalog

# The official files as the team keeps them beside the checkout, else the copy in tests/specs
# (the same files, unchanged) so that a clone anywhere validates against the spec.
_SHARED = Path(__file__).resolve().parents[3] / "shared/specs/3gpp-rel17"
_VENDORED = Path(__file__).resolve().parents[1] / "specs/3gpp-rel17"
SPEC = (_SHARED if _SHARED.is_dir() else _VENDORED) / "TS32291_Nchf_ConvergedCharging.yaml"
BASE = "/nchf-convergedcharging/v3"
DEMO_WITHOUT_TARIFFS = DEMO_CATALOG.read_text(encoding="utf-8").split("# Tariffs:")[0]
"""The demo catalog's zones, methods and plans: a test adds tariffs of its own."""
_imsi = itertools.count(1)
MIB = 1024 * 1024


@lru_cache(maxsize=1)
def spec() -> OpenAPI:
    return OpenAPI.from_file_path(
        str(SPEC),
        config=Config(extra_media_type_deserializers={"application/problem+json": json.loads}),
    )


@dataclass
class TestLine:
    line: Line
    imsi: str

    @property
    def supi(self) -> str:
        return f"imsi-{self.imsi}"

    @property
    def gpsi(self) -> str:
        return "msisdn-" + self.line.msisdn.lstrip("+")


async def make_line(
    db: Database,
    *,
    money: int = 0,
    grants: list[UnitGrant] | None = None,
    state: str = "active",
    catalog: bool = True,
    with_account: bool = True,
) -> TestLine:
    imsi = f"00101{next(_imsi) + uuid.uuid4().int % 10**6:010d}"

    async def run(s: AsyncSession) -> TestLine:
        if catalog:
            await load_demo_catalog(s)
        account = await create_account(s) if with_account else None
        line = await create_line(s, imsi=imsi, account_id=account.id if account else None)
        if money:
            await credit_wallet(s, line, money, source=f"test:{line.id}")
        if grants:
            await grant_units(s, line, grants, source=f"test-grant:{line.id}")
        line.state = state
        await s.flush()
        return TestLine(line, imsi)

    return await db.run(run)


async def load_tariffs_only(db: Database, tariffs: str) -> None:
    """The demo catalog with `tariffs` (TOML `[[tariffs]]` entries) instead of its own."""
    catalog = parse_catalog(DEMO_WITHOUT_TARIFFS + "\n" + tariffs, source="test.toml")
    await db.run(lambda s: load_catalog(s, catalog))


async def balances(db: Database, line: Line) -> LineBalances:
    async with db.read() as s:
        fresh = await s.get(Line, line.id)
        assert fresh is not None
        return await line_balances(s, fresh)


async def nf_key(db: Database, scopes: tuple[str, ...] = ("charging",)) -> dict[str, str]:
    issued = await db.run(lambda s: create_api_key(s, "smf", list(scopes)))
    return {"Authorization": f"Bearer {issued.token}"}


def now_stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def body(
    subscriber: str | None,
    seq: int,
    units: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "nfConsumerIdentification": {"nodeFunctionality": "SMF", "nFName": str(uuid.uuid4())},
        "invocationTimeStamp": now_stamp(),
        "invocationSequenceNumber": seq,
        **extra,
    }
    if subscriber:
        doc["subscriberIdentifier"] = subscriber
    if units is not None:
        doc["multipleUnitUsage"] = units
    return doc


def rg(
    group: int, *, requested: dict[str, int] | None = None, used: list[dict[str, int]] | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"ratingGroup": group}
    if requested is not None:
        entry["requestedUnit"] = requested
    if used is not None:
        entry["usedUnitContainer"] = [
            {"localSequenceNumber": i, **u} for i, u in enumerate(used, start=1)
        ]
    return entry


def validate_exchange(path: str, raw: bytes, status: int, answer: Any) -> None:
    """A request body and the answer to it (status, JSON body or none) checked against the
    official YAML, as if they had crossed HTTP (`path`: `/chargingdata`, `/chargingdata/{ref}/
    update` …)."""
    request = MockRequest(
        "https://example.com", "post", BASE + path, data=raw, content_type="application/json"
    )
    spec().validate_request(request)
    if status == 204 and answer is None:
        return
    content = json.dumps(answer).encode()
    spec().validate_response(
        request, MockResponse(content, status_code=status, content_type="application/json")
    )


class Nchf:
    """Posts to the Nchf API; every request and response is validated against the official YAML."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    async def _post(self, path: str, doc: Any, *, validate_request: bool = True) -> httpx.Response:
        raw = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
        request = MockRequest(
            "https://example.com", "post", BASE + path, data=raw, content_type="application/json"
        )
        if validate_request:
            spec().validate_request(request)
        r = await self.client.post(
            BASE + path, content=raw, headers={**self.headers, "content-type": "application/json"}
        )
        content_type = r.headers.get("content-type", "application/json").split(";")[0]
        if not (r.status_code == 204 and not r.content):
            spec().validate_response(
                request,
                MockResponse(r.content, status_code=r.status_code, content_type=content_type),
            )
        return r

    async def create(self, doc: Any, **kw: Any) -> httpx.Response:
        return await self._post("/chargingdata", doc, **kw)

    async def update(self, ref: str, doc: Any, **kw: Any) -> httpx.Response:
        return await self._post(f"/chargingdata/{ref}/update", doc, **kw)

    async def release(self, ref: str, doc: Any, **kw: Any) -> httpx.Response:
        return await self._post(f"/chargingdata/{ref}/release", doc, **kw)


async def nchf(client: httpx.AsyncClient, db: Database) -> Nchf:
    """An Nchf client with a new API key of scope `charging`."""
    return Nchf(client, await nf_key(db))


@asynccontextmanager
async def restarted(
    api: Nchf, db: Database, settings: Settings, **changes: Any
) -> AsyncIterator[Nchf]:
    """`api`'s network function talking to the CHF restarted with `changes` to its settings: a
    new application on the same database, its caches (the rating table) empty."""
    app = create_app(settings.model_copy(update=changes), db=db, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Nchf(client, api.headers)


def ref_of(r: httpx.Response) -> str:
    return r.headers["location"].rsplit("/", 1)[-1]


def unit_info(r: httpx.Response, group: int) -> dict[str, Any]:
    found = [u for u in r.json()["multipleUnitInformation"] if u["ratingGroup"] == group]
    assert len(found) == 1, r.json()
    return found[0]


async def open_reservations(db: Database, reference: str | None = None) -> int:
    async with db.read() as s:
        stmt = (
            select(func.count())
            .select_from(LedgerTransfer)
            .where(LedgerTransfer.pending_status == PendingStatus.pending.value)
        )
        if reference is not None:
            stmt = stmt.where(LedgerTransfer.reference == reference)
        return int((await s.execute(stmt)).scalar_one())


async def assert_ledger_balanced(db: Database) -> None:
    """Per unit, debits equal credits (posted and pending), and no bounded account is overdrawn."""
    async with db.read() as s:
        rows = (
            await s.execute(
                select(
                    LedgerAccount.unit,
                    func.sum(LedgerAccount.debits_posted),
                    func.sum(LedgerAccount.credits_posted),
                    func.sum(LedgerAccount.debits_pending),
                    func.sum(LedgerAccount.credits_pending),
                ).group_by(LedgerAccount.unit)
            )
        ).all()
        over = (
            await s.execute(
                select(func.count())
                .select_from(LedgerAccount)
                .where(
                    LedgerAccount.debits_must_not_exceed_credits.is_(True),
                    LedgerAccount.debits_posted + LedgerAccount.debits_pending
                    > LedgerAccount.credits_posted,
                )
            )
        ).scalar_one()
    assert over == 0
    for unit, dp, cp, dpend, cpend in rows:
        assert int(dp) == int(cp), f"{unit}: posted debits {dp} != credits {cp}"
        assert int(dpend) == int(cpend), f"{unit}: pending {dpend} != {cpend}"
