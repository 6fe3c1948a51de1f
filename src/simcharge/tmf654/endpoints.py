"""`/tmf-api/prepayBalanceManagement/v4`: TMF654 for staff tools and integrations (API keys).

Errors here follow TMF630's `Error` shape (`code`, `reason`, `message`, `status`,
`referenceError`) with our problem `type`, `field` and `errors` alongside, as `application/json`;
invalid input is 400 (the spec lists no 422).
A POST may carry `Idempotency-Key`: the same key and body answer the first result again.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Header, Request, Response
from fastapi.datastructures import Default, DefaultPlaceholder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException

from simcharge.api.deps import DB, AppSettings, Integration, request_language, require_scope
from simcharge.api.problems import field_errors, said, validation_problem
from simcharge.auth.models import ApiKey
from simcharge.backoffice.audit import Actor, record_read
from simcharge.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    SimchargeError,
    ValidationFailed,
)
from simcharge.kit.money import LossyConversionError, to_minor
from simcharge.kit.translations import N_, translate
from simcharge.ledger.models import LedgerTransfer
from simcharge.ledger.service import MAX_AMOUNT
from simcharge.lifecycle.service import Policy
from simcharge.lines.models import Bucket, Line, LineState
from simcharge.lines.repository import LineRepository
from simcharge.lines.service import find_line_by_msisdn
from simcharge.tmf654 import service
from simcharge.tmf654.models import ActionKind, BalanceAction
from simcharge.tmf654.schemas import (
    BASE_PATH,
    Figure,
    action_out,
    add_exactly,
    bucket_ref,
    encode,
    matches,
    msisdn_ref,
    party,
    quantity,
    select_fields,
    spec,
    units_of,
    validate_body,
    when,
)
from simcharge.tmf654.service import (
    AccumulatedBalanceNotFound,
    BalanceActionNotFound,
    BucketNotFound,
    Holder,
)

audit = structlog.get_logger("simcharge.audit")


def tmf_error(request: Request, exc: SimchargeError) -> JSONResponse:
    language = getattr(request.state, "language", None) or request_language(request)
    # TMF654 answers bad input with 400 (it lists no 422), and a POST whose body names
    # something unknown is bad input too (it lists no 404 for POST).
    status = exc.status
    if status == 422 or (
        status == 404 and request.method == "POST" and not isinstance(exc, NoSuchResource)
    ):
        status = 400
    body: dict[str, Any] = {
        "code": exc.slug,
        "reason": translate(language, exc.title),
        "message": said(language, exc.detail_template, exc.params),
        "status": str(status),
        "referenceError": f"{origin(request)}{exc.type_uri}",
        "@type": "Error",
        "type": exc.type_uri,
    }
    if exc.field:
        body["field"] = exc.field
    if exc.errors:
        body["errors"] = field_errors(exc, language)
        body.setdefault("field", exc.errors[0].field)
    body.update(exc.extra())
    return JSONResponse(body, status_code=status, headers=exc.headers)


JSON_TYPE = re.compile(r"application/([a-z0-9.+-]+\+)?json\s*(;.*)?", re.IGNORECASE)
PATCH_TYPE = re.compile(r"application/(merge-patch\+)?json\s*(;.*)?", re.IGNORECASE)
PATCH_TYPES = ("application/json", "application/merge-patch+json")
"""What a PATCH is read as: a JSON merge patch (RFC 7396), plain JSON being read the same way.
A JSON Patch (`application/json-patch+json`, a list of operations) or any other `+json` is
another format, refused (415), not read as a merge patch."""


class UnsupportedMediaType(SimchargeError):
    """A body sent as another type than JSON (a form, `text/plain`): refused as such, not read
    as JSON anyway nor reported as a body that is no object."""

    status = 415
    slug = "unsupported-media-type"
    title = N_("Send the body as application/json.")

    def extra(self) -> dict[str, Any]:
        """The types accepted, as the `Accept-Post` or `Accept-Patch` header lists them."""
        listed = self.headers.get("Accept-Patch") or self.headers.get("Accept-Post")
        return {"accepted": listed.split(", ") if listed else ["application/json"]}


def _check_media_type(request: Request) -> None:
    given = request.headers.get("content-type", "").strip()
    if request.method == "PATCH":
        if not PATCH_TYPE.fullmatch(given):
            raise UnsupportedMediaType(
                N_("Send the body as application/json or application/merge-patch+json."),
                field="Content-Type", headers={"Accept-Patch": ", ".join(PATCH_TYPES)},
            )
    elif not JSON_TYPE.fullmatch(given):
        raise UnsupportedMediaType(field="Content-Type", headers={"Accept-Post": "application/json"})


class ExactRequest(Request):
    """A request whose JSON numbers with a fraction keep the digits written (`Figure`): an
    amount is read exactly, never through a binary float (the thirteenth round's review)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_float=Figure)
        return self._json


class ExactJSONResponse(JSONResponse):
    """JSON whose amounts keep their decimal digits (`schemas.exact`): `90071992547409.93` USD is
    written so, not as the binary float nearest to it (`…409.94` once read back)."""

    def render(self, content: Any) -> bytes:
        return encode(content).encode("utf-8")


class TmfRoute(APIRoute):
    """Renders every expected failure of its endpoint (auth included) as a TMF `Error`, and
    reads its body with exact amounts (`ExactRequest`). Its result is not passed through a
    response model: pydantic would write each amount as a binary float; `ExactJSONResponse`
    writes it exactly."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["response_model"] = None
        if isinstance(kwargs.get("response_class", Default(None)), DefaultPlaceholder):
            kwargs["response_class"] = ExactJSONResponse
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        takes_body = self.body_field is not None

        async def handler(request: Request) -> Response:
            request = ExactRequest(request.scope, request.receive)
            try:
                if takes_body:
                    _check_media_type(request)
                return await original(request)
            except SimchargeError as exc:
                return tmf_error(request, exc)
            except RequestValidationError as exc:
                return tmf_error(request, validation_problem(exc))
            except HTTPException as exc:  # e.g. a body that is not JSON at all
                return JSONResponse(
                    {
                        "code": "http-error",
                        "reason": str(exc.detail),
                        "status": str(exc.status_code),
                        "@type": "Error",
                    },
                    status_code=exc.status_code,
                    headers=exc.headers,
                )

        return handler


_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "TMF630 Error, with our problem `type`, `field` and `errors`",
    "properties": {
        "code": {"type": "string", "description": "The problem's stable slug"},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "status": {"type": "string"},
        "referenceError": {"type": "string", "format": "uri"},
        "@type": {"type": "string", "const": "Error"},
        "type": {"type": "string"},
        "field": {"type": "string", "description": "The offending field or parameter"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["code", "reason", "status", "@type"],
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("Bad input (TMF654 lists no 422): the offending `field`, nothing changed"),
    401: _error("No API key, or not a live one"),
    403: _error("The key lacks the scope"),
    404: _error("No such resource"),
    409: _error("Refused in the balance's or the line's state (e.g. `line-not-in-service`, "
                "`insufficient-balance`), or a top-up over the limit (`topup-limit-exceeded`)"),
    "default": _error("Any other error, in the same shape"),
}
"""What every TMF654 operation may answer, declared once (its `default` also keeps FastAPI from
listing a 422, which this API never answers)."""

router = APIRouter(prefix=BASE_PATH, tags=["TMF654 balance management"], route_class=TmfRoute,
                   responses=ERROR_RESPONSES)

Read = Annotated[Integration, require_scope("balance:read")]
Write = Annotated[Integration, require_scope("balance:write")]
Adjust = Annotated[Integration, require_scope("balance:adjust")]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]
JsonBody = Annotated[dict[str, Any], Body()]

FILTERS_RESERVED = {"fields", "offset", "limit", "lang"}
LINE_FILTERS = {"logicalResource.id", "partyAccount.id"}
"""Applied by `_lines_selected` (which lines are read), not to the items: an adjustment carries no
`partyAccount`, a history entry of a transfer names the giver and the receiver."""


def origin(request: Request) -> str:
    """Where the API is served, as configured (`SIMCHARGE_BASE_URL`): never the request's `Host`
    header, which a client chooses (hrefs, `Location` and `referenceError` built from it would
    point wherever the client said)."""
    settings = getattr(request.app.state, "settings", None)
    return str(settings.base_url if settings is not None else request.base_url).rstrip("/")


def base(request: Request) -> str:
    return f"{origin(request)}{BASE_PATH}"


def actor_of(key: Integration) -> str:
    return f"apikey:{key.key_prefix}"


def _actor(request: Request, key: Integration) -> Actor:
    """The API key as its audit entries name it (from where it called)."""
    return Actor(
        name=actor_of(key), permissions=frozenset(), scopes=key.scopes,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


async def _read(
    db: DB, request: Request, key: Integration, action: str, *, resource: str,
    target: tuple[str, uuid.UUID] | None, **details: Any,
) -> None:
    """A read of balances (personal data: whose line, what it holds, what was done to it),
    audited as the back office's reads are (`record_read`: its own small transaction after the
    read) by `apikey:<prefix>`, with the key's client (the same across its rotations). Never a
    number typed: a line is named by its id."""
    target_type, target_id = target if target is not None else (None, None)
    await record_read(
        db, _actor(request, key), action, target_type=target_type, target_id=target_id,
        details={"resource": resource, **details, "client": key.client_id},
    )


async def _list_read(
    db: DB, request: Request, response: Response, key: Integration, resource: str,
    lines: list[Line],
) -> None:
    """One entry per list request, whatever the number of lines it read (`balance.list`): the
    filter as asked — the owner's id (`partyAccount.id`, then the target), the line a number
    named (by its id: the target when it is the only filter) —, the lines read and how many
    items were found."""
    params = request.query_params
    owner = params.get("partyAccount.id")
    target: tuple[str, uuid.UUID] | None = None
    by = [name for name in ("logicalResource.id", "partyAccount.id") if params.get(name)]
    if owner and lines and lines[0].account_id is not None and str(lines[0].account_id) == str(
        uuid.UUID(owner)
    ):
        target = ("account", lines[0].account_id)
    elif not owner and len(lines) == 1:
        target = ("line", lines[0].id)
    await _read(
        db, request, key, "balance.list", resource=resource, target=target, by=by,
        lines=[line.id for line in lines], found=int(response.headers.get("X-Total-Count", 0)),
    )


async def _line_read(
    db: DB, request: Request, key: Integration, resource: str, item_id: str, line: Line
) -> None:
    """One wallet, bucket, total or action read (`balance.view`), on its line."""
    await _read(
        db, request, key, "balance.view", resource=resource, target=("line", line.id),
        id=item_id, account_id=line.account_id,
    )


TMF630_OPERATORS = {"gt", "gte", "lt", "lte", "eq", "ne", "regex", "in", "nin"}
_FILTER_NAME = re.compile(r"^[A-Za-z@][A-Za-z0-9@_]*(\.[A-Za-z@][A-Za-z0-9@_]*)*$")


def _filters(request: Request, definition: str) -> dict[str, str]:
    """The attribute filters of a list request. Only equality on the resource's own attributes
    (dotted paths into them) is supported: an unknown attribute (`sort` too) or a TMF630
    operator (`x.gt=`, `x>=`) is refused, not read as equality on nothing (an empty list)."""
    known = spec()["definitions"][definition].get("properties", {})
    filters = {}
    for name, value in request.query_params.multi_items():
        if name in FILTERS_RESERVED or name in LINE_FILTERS:
            continue
        parts = name.split(".")
        if (
            not _FILTER_NAME.match(name)
            or parts[0] not in known
            or any(p in TMF630_OPERATORS for p in parts[1:])
        ):
            raise BadRequest(field=name)
        filters[name] = value
    return filters


def _page_of(request: Request) -> tuple[int, int]:
    params = request.query_params
    figures = {}
    for name, default in (("offset", 0), ("limit", 100)):
        try:
            figures[name] = int(params.get(name, default))
        except ValueError as exc:
            raise BadRequest(N_("offset and limit are whole numbers."), field=name) from exc
    offset, limit = figures["offset"], figures["limit"]
    if offset < 0:
        raise BadRequest(N_("offset ≥ 0 and 1 ≤ limit ≤ 1000."), field="offset")
    if not 1 <= limit <= 1000:
        raise BadRequest(N_("offset ≥ 0 and 1 ≤ limit ≤ 1000."), field="limit")
    return offset, limit


def _shown(
    request: Request, response: Response, page: list[dict[str, Any]], total: int
) -> list[dict[str, Any]]:
    response.headers["X-Total-Count"] = str(total)
    response.headers["X-Result-Count"] = str(len(page))
    return [select_fields(i, request.query_params.get("fields")) for i in page]


def _paged(
    request: Request, response: Response, items: list[dict[str, Any]], definition: str
) -> list[dict[str, Any]]:
    chosen = [i for i in items if matches(i, _filters(request, definition))]
    offset, limit = _page_of(request)
    return _shown(request, response, chosen[offset : offset + limit], len(chosen))


class RepeatedParameter(BadRequest):
    """A query parameter given twice (`logicalResource.id=A&logicalResource.id=B`): refused,
    not read as the last of them (B's buckets answered for a question about A and B). Either of
    several values is asked as TMF630 does, in one parameter: `a,b`."""

    slug = "repeated-parameter"
    title = N_("Give each query parameter once; a,b asks for either value.")


def _once(request: Request) -> None:
    """Each query parameter of the request at most once (`RepeatedParameter`, naming it)."""
    seen: set[str] = set()
    for name, _value in request.query_params.multi_items():
        if name in seen:
            raise RepeatedParameter(field=name)
        seen.add(name)


async def _lines_selected(s: AsyncSession, request: Request) -> list[Line]:
    """Listing needs a line: `logicalResource.id` (its MSISDN) or `partyAccount.id` (its
    owner's lines); both: that line if that account owns it. An MSISDN that is no line of ours
    is 404 (naming `logicalResource.id`), as the line's bucket would be: the list is that
    line's. An account id that is no UUID is bad input (400, `partyAccount.id`); one that holds
    no line — or no account of ours — matches nothing: an empty list, as TMF630 filters do."""
    _once(request)
    params = request.query_params
    msisdn = params.get("logicalResource.id")
    owner = params.get("partyAccount.id")
    try:
        owner_id = uuid.UUID(owner) if owner else None
    except ValueError:
        raise BadRequest(N_("partyAccount.id is a customer account's id (a UUID)."),
                         field="partyAccount.id") from None
    if msisdn:
        line = await _by_msisdn(s, msisdn, "logicalResource.id")
        return [line] if owner_id is None or line.account_id == owner_id else []
    if owner_id is not None:
        return list(await LineRepository(s).of_account(owner_id))
    raise BadRequest(
        N_("Filter by logicalResource.id (an MSISDN) or partyAccount.id."),
        field="logicalResource.id",
    )


# --- bucket ----------------------------------------------------------------------------------


async def buckets_of(s: AsyncSession, request: Request, line: Line) -> list[dict[str, Any]]:
    from simcharge.kit.clock import utcnow

    now = utcnow()
    wallet, rows = await LineRepository(s).wallet_and_buckets(line)
    in_service = line.state == "active"
    out = [
        _bucket(request, line, wallet.id, "monetary", line.currency, "wallet",
                wallet.credits_posted - wallet.debits_posted - wallet.debits_pending,
                wallet.debits_pending, line.created_at, None, in_service, now)
    ]
    for r in rows:
        out.append(
            _bucket(request, line, r.id, service.UNIT_USAGE.get(r.unit, "other"), r.unit,
                    r.source, r.credits_posted - r.debits_posted - r.debits_pending,
                    r.debits_pending, r.created_at, r.expires_at, in_service, now)
        )
    return out


def _bucket(
    request: Request, line: Line, account_id: uuid.UUID, usage: str, unit: str, name: str,
    remaining: int, reserved: int, start: datetime, end: datetime | None, in_service: bool,
    now: datetime,
) -> dict[str, Any]:
    expired = end is not None and end <= now
    item: dict[str, Any] = {
        "id": str(account_id),
        "href": f"{base(request)}/bucket/{account_id}",
        "@type": "Bucket",
        "name": name,
        "isShared": False,
        "usageType": usage,
        "remainingValue": quantity(0 if expired else remaining, unit),
        "reservedValue": quantity(reserved, unit),
        "status": "expired" if expired else ("active" if in_service else "suspended"),
        "validFor": {"startDateTime": when(start)},
        "logicalResource": msisdn_ref(line.msisdn),
    }
    if end is not None:
        item["validFor"]["endDateTime"] = when(end)
    if (p := party(line)) is not None:
        item["partyAccount"] = p
    return item


@router.get("/bucket", summary="List or find buckets (filter by logicalResource.id or "
            "partyAccount.id; usageType, status, id, fields, offset, limit)")
async def list_buckets(
    key: Read, db: DB, request: Request, response: Response
) -> list[dict[str, Any]]:
    async with db.read() as s:
        items = []
        lines = await _lines_selected(s, request)
        for line in lines:
            items += await buckets_of(s, request, line)
    page = _paged(request, response, items, "Bucket")
    await _list_read(db, request, response, key, "bucket", lines)
    return page


async def _holder(s: AsyncSession, raw_id: str, field: str = "id") -> Holder:
    try:
        account_id = uuid.UUID(raw_id)
    except ValueError:
        raise BucketNotFound(field=field) from None
    holder = await service.holder_of(s, account_id)
    if holder is None:
        raise BucketNotFound(field=field)
    return holder


@router.get("/bucket/{bucket_id}", summary="A bucket (a line's wallet or one of its buckets)")
async def get_bucket(
    bucket_id: str, key: Read, db: DB, request: Request, fields: str | None = None
) -> dict[str, Any]:
    _once(request)
    async with db.read() as s:
        holder = await _holder(s, bucket_id)
        found = [i for i in await buckets_of(s, request, holder.line)
                 if i["id"] == str(holder.account_id)]
    if not found:
        raise BucketNotFound(field="id")
    await _line_read(db, request, key, "bucket", found[0]["id"], holder.line)
    return select_fields(found[0], fields)


# --- accumulatedBalance ----------------------------------------------------------------------


async def accumulated_of(s: AsyncSession, request: Request, line: Line) -> list[dict[str, Any]]:
    totals: dict[str, dict[str, Any]] = {}
    for b in await buckets_of(s, request, line):
        if b["status"] == "expired":
            continue
        usage = b["usageType"]
        entry = totals.setdefault(usage, {
            "id": f"{line.id}.{usage}",
            "href": f"{base(request)}/accumulatedBalance/{line.id}.{usage}",
            "@type": "AccumulatedBalance",
            "name": usage,
            "description": f"{usage} of {line.msisdn}",
            "bucket": [],
            "totalBalance": {"amount": 0, "units": b["remainingValue"]["units"]},
            "logicalResource": msisdn_ref(line.msisdn)[0],
        })
        entry["bucket"].append(bucket_ref(base(request), b["id"]))
        total = entry["totalBalance"]
        total["amount"] = add_exactly(total["amount"], b["remainingValue"]["amount"])
        if (p := party(line)) is not None:
            entry["partyAccount"] = p
    return list(totals.values())


@router.get("/accumulatedBalance", summary="A line's totals per usage type (filter as buckets)")
async def list_accumulated(
    key: Read, db: DB, request: Request, response: Response
) -> list[dict[str, Any]]:
    async with db.read() as s:
        items = []
        lines = await _lines_selected(s, request)
        for line in lines:
            items += await accumulated_of(s, request, line)
    page = _paged(request, response, items, "AccumulatedBalance")
    await _list_read(db, request, response, key, "accumulatedBalance", lines)
    return page


@router.get("/accumulatedBalance/{balance_id}", summary="One total: `<line id>.<usage type>`")
async def get_accumulated(
    balance_id: str, key: Read, db: DB, request: Request, fields: str | None = None
) -> dict[str, Any]:
    _once(request)
    line_part = balance_id.split(".", 1)[0]
    async with db.read() as s:
        try:
            line = await LineRepository(s).get(uuid.UUID(line_part))
        except ValueError:
            line = None
        found = [] if line is None else [
            i for i in await accumulated_of(s, request, line) if i["id"] == balance_id
        ]
    if line is None or not found:
        raise AccumulatedBalanceNotFound(field="id")
    await _line_read(db, request, key, "accumulatedBalance", balance_id, line)
    return select_fields(found[0], fields)


# --- actions: shared -------------------------------------------------------------------------


async def _render(s: AsyncSession, request: Request, action: BalanceAction) -> dict[str, Any]:
    line = await s.get(Line, action.line_id)
    assert line is not None
    receiver = await s.get(Line, action.receiver_line_id) if action.receiver_line_id else None
    status = await service.reservation_status(s, action)
    used = ends = None
    if action.kind == ActionKind.reserve and action.pending_transfer_id is not None:
        pending = await s.get(LedgerTransfer, action.pending_transfer_id)
        ends = pending.timeout_at if pending is not None else None
        if status == "completed":
            used = await service.used_amount(s, action)
    elif (action.kind == ActionKind.transfer and action.usage_type != "monetary"
          and action.receiver_account_id is not None):
        # Units: the receiver's new bucket ends when the giving one did (money has no end).
        given = await s.get(Bucket, action.receiver_account_id)
        ends = given.expires_at if given is not None else None
    elif action.kind in (ActionKind.topup, ActionKind.adjust) and action.usage_type != "monetary":
        # The end the bucket has, asked for or not (money has no end).
        bucket = await s.get(Bucket, action.account_id)
        ends = bucket.expires_at if bucket is not None else None
    return action_out(base(request), action, line, status=status, receiver=receiver,
                      used=used, ends=ends)


CHUNK = 1000
"""Actions read at a time when attribute filters must be matched against the rendered items."""


async def _action_page(
    s: AsyncSession,
    request: Request,
    response: Response,
    where: ColumnElement[bool],
    definition: str,
    render: Callable[[BalanceAction], Awaitable[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Newest first. Without attribute filters the database counts and pages; with them (they
    match the resource as shown: a reservation's status is the ledger's) every action is read,
    a chunk at a time, and only the page kept — never a capped list paged in memory."""
    filters = _filters(request, definition)
    offset, limit = _page_of(request)
    stmt = (
        select(BalanceAction)
        .where(where)
        .order_by(BalanceAction.requested_at.desc(), BalanceAction.id.desc())
    )
    if not filters:
        count = select(func.count()).select_from(BalanceAction).where(where)
        total = int((await s.execute(count)).scalar_one())
        # Past the end: nothing to read (an offset beyond a 64-bit integer is no SQL's).
        rows = (
            [] if offset >= total
            else (await s.execute(stmt.offset(offset).limit(limit))).scalars().all()
        )  # fmt: skip
        return _shown(request, response, [await render(a) for a in rows], total)
    page: list[dict[str, Any]] = []
    total = start = 0
    while True:
        rows = (await s.execute(stmt.offset(start).limit(CHUNK))).scalars().all()
        for action in rows:
            item = await render(action)
            if matches(item, filters):
                if offset <= total < offset + limit:
                    page.append(item)
                total += 1
        if len(rows) < CHUNK:
            return _shown(request, response, page, total)
        start += CHUNK


async def _list_actions(
    kind: ActionKind, key: Integration, db: DB, request: Request, response: Response
) -> list[dict[str, Any]]:
    async with db.read() as s:
        lines = await _lines_selected(s, request)
        where = and_(BalanceAction.kind == kind.value,
                     BalanceAction.line_id.in_([line.id for line in lines]))
        page = await _action_page(
            s, request, response, where, _RESOURCES[kind], lambda a: _render(s, request, a)
        )
    await _list_read(db, request, response, key, _PATHS[kind], lines)
    return page


async def _get_action(
    kind: ActionKind, action_id: str, key: Integration, db: DB, request: Request,
    fields: str | None,
) -> dict[str, Any]:
    _once(request)
    async with db.read() as s:
        action = await _find(s, kind, action_id)
        item = await _render(s, request, action)
        line = await s.get(Line, action.line_id)
    assert line is not None
    await _line_read(db, request, key, _PATHS[kind], item["id"], line)
    return select_fields(item, fields)


async def _find(s: AsyncSession, kind: ActionKind, action_id: str) -> BalanceAction:
    try:
        found = await s.get(BalanceAction, uuid.UUID(action_id))
    except ValueError:
        found = None
    if found is None or found.kind != kind.value:
        raise BalanceActionNotFound(field="id")
    return found


async def _line_of(s: AsyncSession, body: dict[str, Any], name: str = "logicalResource") -> Line:
    ref = body.get(name)
    if isinstance(ref, list):
        ref = ref[0] if ref else None
    if not isinstance(ref, dict) or not ref.get("id"):
        raise ValidationFailed(N_("Name the line by its MSISDN."), field=f"{name}.id")
    return await _by_msisdn(s, str(ref["id"]), f"{name}.id")


async def _by_msisdn(s: AsyncSession, msisdn: str, field: str) -> Line:
    """The line of `msisdn`; not one (or no number): refused naming the request's `field`, not
    the lines service's own `msisdn`, which the request does not have."""
    try:
        return await find_line_by_msisdn(s, msisdn)
    except SimchargeError as exc:
        if exc.field == "msisdn":
            exc.field = field
        raise


async def _target(
    s: AsyncSession, body: dict[str, Any], *, source: bool = False
) -> tuple[Line, Holder | None]:
    """The line and, if `bucket.id` names one of ours, the wallet or bucket meant. Where the
    bucket is the `source` (what a transfer, reservation or adjustment takes from), an id that
    names none of ours is refused, not passed over for the line's wallet; a top-up's may name a
    new one."""
    bucket_id = str((body.get("bucket") or {}).get("id") or "")
    holder = None
    with contextlib.suppress(ValueError):
        holder = await service.holder_of(s, uuid.UUID(bucket_id))
        if holder is None and source:
            raise BucketNotFound(field="bucket.id")
    if holder is not None:
        if body.get("logicalResource"):
            named = await _line_of(s, body)
            if named.id != holder.line.id:
                raise ValidationFailed(N_("The bucket is not this line's."), field="bucket.id")
        return holder.line, holder
    return await _line_of(s, body), None


def _check_party(body: dict[str, Any], line: Line, *, field: str = "logicalResource") -> None:
    """A `partyAccount` named must own the line: one no account holds is nobody's. An unsold
    line (`available`) is refused as not in service first, naming `field`: that is what is
    wrong with it, whoever is named."""
    if LineState(line.state) is LineState.available:
        raise service.LineNotInService(N_("The line is not in service: it was never sold."),
                                       field=field)
    given = (body.get("partyAccount") or {}).get("id")
    if given and str(line.account_id) != str(given):
        raise ValidationFailed(N_("The line does not belong to this party account."),
                               field="partyAccount.id")


def _until(body: dict[str, Any]) -> datetime | None:
    end = (body.get("validFor") or {}).get("endDateTime")
    if not end:
        return None
    try:
        parsed = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationFailed(N_("Not a date and time."), field="validFor.endDateTime") from exc
    if parsed.tzinfo is None:
        raise ValidationFailed(N_("A time zone is required."), field="validFor.endDateTime")
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:00-12:00 is in the year 10000 in UTC
        raise ValidationFailed(N_("Not a date and time."), field="validFor.endDateTime") from exc


async def _create(
    db: DB, request: Request, key: Integration, idem: str | None, body: dict[str, Any],
    kind: ActionKind, act: Callable[[AsyncSession, str], Awaitable[BalanceAction]],
) -> JSONResponse:
    """Make the action `act(session, client)` makes, or answer the one made under the same
    `Idempotency-Key` by the key's client: any of its keys (a rotation's successor replays what
    its predecessor made), `client` being whose keys they are (`service.client_scope`)."""
    validate_body(_DEFINITIONS[kind], body)
    actor = actor_of(key)

    async def run(s: AsyncSession) -> tuple[dict[str, Any], bool]:
        # The client's keys (a rotation chain: a few), its id read with the key (`Integration`).
        prefixes = (await s.execute(
            select(ApiKey.prefix).where(ApiKey.client_id == key.client_id)
        )).scalars().all()  # fmt: skip
        also = [f"apikey:{prefix}" for prefix in prefixes]
        found = await service.replay(s, actor, idem, body, kind, also=also)
        if found is not None:
            return await _render(s, request, found), True
        action = await act(s, service.client_scope(str(key.client_id)))
        return await _render(s, request, action), False

    out, replayed = await db.run(run)
    audit.info("balance.action", kind=out["@type"], id=out["id"], actor=actor, replayed=replayed)
    headers = {"Location": out["href"]}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return ExactJSONResponse(out, status_code=201, headers=headers)


_RESOURCES = {
    ActionKind.topup: "TopupBalance",
    ActionKind.adjust: "AdjustBalance",
    ActionKind.reserve: "ReserveBalance",
    ActionKind.transfer: "TransferBalance",
}
_PATHS = {kind: name[0].lower() + name[1:] for kind, name in _RESOURCES.items()}
"""Each kind's resource as its path names it (`topupBalance`): what a read's audit entry says."""
_DEFINITIONS = {
    ActionKind.topup: "TopupBalance_Create",
    ActionKind.adjust: "AdjustBalance_Create",
    ActionKind.reserve: "ReserveBalance_Create",
    ActionKind.transfer: "TransferBalance_Create",
}


# --- topupBalance ----------------------------------------------------------------------------


@router.post("/topupBalance", status_code=201, summary="Credit a line (money or units)")
async def create_topup(
    body: JsonBody,
    key: Write,
    db: DB,
    request: Request,
    settings: AppSettings,
    idem: IdemKey = None,
) -> JSONResponse:
    """Money comes from the key's client's receivable (`channel:<client id>:<CUR>`, at most
    `SIMCHARGE_TMF654_TOPUP_MAX_AMOUNTS` per request: 409 `topup-limit-exceeded`, field
    `amount`); every top-up is audited (`balance.topup`)."""
    policy = Policy.of(settings)
    by = _actor(request, key)

    async def act(s: AsyncSession, client: str) -> BalanceAction:
        line, holder = await _target(s, body)
        _check_party(body, line)
        usage = str(body.get("usageType"))
        unit = service.unit_for(line, usage)
        if (body.get("validFor") or {}).get("startDateTime") is not None:
            # A bucket is valid from when it is made; a start stored and shown would be a lie.
            raise ValidationFailed(
                N_("A top-up counts from when it is made: the start cannot be chosen."),
                field="validFor.startDateTime",
            )
        amount, until = units_of(body.get("amount"), unit, "amount"), _until(body)
        return await service.topup(
            s, line=await _locked(s, line), usage_type=usage, amount=amount, target=holder,
            valid_until=until, actor=actor_of(key), key=idem, request=body,
            reason=body.get("reason"), policy=policy, client=client, settings=settings,
            client_id=key.client_id, by=by,
        )

    return await _create(db, request, key, idem, body, ActionKind.topup, act)


async def _locked(s: AsyncSession, line: Line) -> Line:
    await s.refresh(line, with_for_update=True)
    return line


@router.get("/topupBalance", summary="Top-ups of a line")
async def list_topups(
    key: Read, db: DB, request: Request, response: Response
) -> list[dict[str, Any]]:
    return await _list_actions(ActionKind.topup, key, db, request, response)


@router.get("/topupBalance/{action_id}", summary="A top-up")
async def get_topup(
    action_id: str, key: Read, db: DB, request: Request, fields: str | None = None
) -> dict[str, Any]:
    return await _get_action(ActionKind.topup, action_id, key, db, request, fields)


# --- adjustBalance ---------------------------------------------------------------------------


@router.post("/adjustBalance", status_code=201, summary="Correct a wallet or bucket (staff)")
async def create_adjustment(
    body: JsonBody, key: Adjust, db: DB, request: Request, settings: AppSettings,
    idem: IdemKey = None,
) -> JSONResponse:
    actor = _actor(request, key)

    async def act(s: AsyncSession, client: str) -> BalanceAction:
        if "validFor" in body:
            # A correction changes an amount, never when the wallet or bucket ends.
            raise ValidationFailed(
                N_("An adjustment keeps the end of what it corrects: it cannot be chosen."),
                field="validFor",
            )
        line, holder = await _target(s, body, source=True)
        usage = str(body.get("usageType"))
        unit = service.unit_for(line, usage)
        if holder is None:
            if usage != "monetary":
                raise ValidationFailed(N_("Name the bucket to adjust."), field="bucket.id")
            holder = Holder(line, line.wallet_account_id, line.currency, None)
        if holder.unit != unit:
            raise ValidationFailed(N_("The bucket holds another usage type."), field="usageType")
        return await service.adjust(
            s, settings, holder=holder, amount=units_of(body.get("amount"), unit, "amount"),
            actor=actor, key=idem, request=body, reason=str(body.get("reason") or ""),
            client=client,
        )

    return await _create(db, request, key, idem, body, ActionKind.adjust, act)


@router.get("/adjustBalance", summary="Adjustments of a line")
async def list_adjustments(
    key: Read, db: DB, request: Request, response: Response
) -> list[dict[str, Any]]:
    return await _list_actions(ActionKind.adjust, key, db, request, response)


@router.get("/adjustBalance/{action_id}", summary="An adjustment")
async def get_adjustment(
    action_id: str, key: Read, db: DB, request: Request, fields: str | None = None
) -> dict[str, Any]:
    return await _get_action(ActionKind.adjust, action_id, key, db, request, fields)


# --- reserveBalance --------------------------------------------------------------------------


@router.post("/reserveBalance", status_code=201, summary="Hold an amount for a charge to come")
async def create_reservation(
    body: JsonBody, key: Write, db: DB, request: Request, idem: IdemKey = None
) -> JSONResponse:
    async def act(s: AsyncSession, client: str) -> BalanceAction:
        if "startDateTime" in (body.get("validFor") or {}):
            # A hold is a pending ledger transfer: it holds from when it is made until its
            # end (the timeout). One that starts later would hold nothing until then, so a
            # start is refused, not stored and shown as if it were applied.
            raise ValidationFailed(
                N_("A reservation holds from when it is made: the start cannot be chosen."),
                field="validFor.startDateTime",
            )
        line, holder = await _target(s, body, source=True)
        _check_party(body, line, field="bucket.id")
        usage = str(body.get("usageType"))
        unit = service.unit_for(line, usage)
        if holder is None:
            if usage != "monetary":
                raise ValidationFailed(N_("Name the bucket to reserve from."), field="bucket.id")
            holder = Holder(line, line.wallet_account_id, line.currency, None)
        if holder.unit != unit:
            raise ValidationFailed(N_("The bucket holds another usage type."), field="usageType")
        return await service.reserve(
            s, holder=holder, amount=units_of(body.get("amount"), unit, "amount"),
            until=_until(body), actor=actor_of(key), key=idem, request=body,
            reason=body.get("reason"), client=client,
        )

    return await _create(db, request, key, idem, body, ActionKind.reserve, act)


@router.get("/reserveBalance", summary="Reservations of a line")
async def list_reservations(
    key: Read, db: DB, request: Request, response: Response
) -> list[dict[str, Any]]:
    return await _list_actions(ActionKind.reserve, key, db, request, response)


@router.get("/reserveBalance/{action_id}", summary="A reservation")
async def get_reservation(
    action_id: str, key: Read, db: DB, request: Request, fields: str | None = None
) -> dict[str, Any]:
    return await _get_action(ActionKind.reserve, action_id, key, db, request, fields)


PATCHABLE = frozenset({"status", "reason", "amount"})
"""What a reservation's PATCH may name: any other attribute the spec's `ReserveBalance_Update`
lists (`bucket`, `validFor`, …) is refused, not passed over as if it had been applied."""


@router.patch("/reserveBalance/{action_id}", summary="Complete (optionally a smaller amount) or "
              "cancel a reservation")
async def patch_reservation(
    action_id: str, body: JsonBody, _key: Write, db: DB, request: Request
) -> dict[str, Any]:
    validate_body("ReserveBalance_Update", body)
    for name in body:
        if name not in PATCHABLE:
            raise ValidationFailed(
                N_("A reservation's patch sets its status, with a reason and, completing it, "
                   "the amount used: nothing else can change."),
                field=name,
            )
    status = body.get("status")
    if status not in ("completed", "cancelled"):
        raise ValidationFailed(N_("status is completed or cancelled."), field="status")

    async def run(s: AsyncSession) -> dict[str, Any]:
        action = await _find(s, ActionKind.reserve, action_id)
        # A present `amount` is one to read, `{}` too (which then names no amount: bad input).
        amount = units_of(body["amount"], action.unit, "amount") if "amount" in body else None
        settled = await service.settle_reservation(
            s, action, complete=status == "completed", amount=amount
        )
        return await _render(s, request, settled)

    return await db.run(run)


@router.delete("/reserveBalance/{action_id}", status_code=204, summary="Cancel a reservation")
async def delete_reservation(action_id: str, _key: Write, db: DB) -> Response:
    async def run(s: AsyncSession) -> None:
        action = await _find(s, ActionKind.reserve, action_id)
        await service.settle_reservation(s, action, complete=False)

    await db.run(run)
    return Response(status_code=204)


# --- transferBalance -------------------------------------------------------------------------


@router.post("/transferBalance", status_code=201, summary="Give money or units to another line")
async def create_transfer(
    body: JsonBody, key: Write, db: DB, request: Request, settings: AppSettings,
    idem: IdemKey = None,
) -> JSONResponse:
    async def act(s: AsyncSession, client: str) -> BalanceAction:
        if body.get("costOwner", "originator") != "originator":
            raise ValidationFailed(N_("The giver pays the fee (costOwner originator)."),
                                   field="costOwner")
        if "validFor" in body:
            # Not chosen: money has no end, and units end when the bucket they came from does.
            raise ValidationFailed(
                N_("A transfer keeps the end of what is given: it cannot be chosen."),
                field="validFor",
            )
        line, holder = await _target(s, body, source=True)
        _check_party(body, line)
        usage = str(body.get("usageType"))
        if body.get("receiverBucketUsageType") != usage:
            raise ValidationFailed(N_("Both sides have the same usage type."),
                                   field="receiverBucketUsageType")
        unit = service.unit_for(line, usage)
        if holder is None:
            if usage != "monetary":
                raise ValidationFailed(N_("Name the bucket to give from."), field="bucket.id")
            holder = Holder(line, line.wallet_account_id, line.currency, None)
        if holder.unit != unit:
            raise ValidationFailed(N_("The bucket holds another usage type."), field="usageType")
        receiver = await _line_of(s, body, "receiverLogicalResource")
        named = (body.get("receiver") or {}).get("id")
        if named and receiver.account_id is not None and str(receiver.account_id) != str(named):
            raise ValidationFailed(N_("The receiving line does not belong to this party."),
                                   field="receiver.id")
        await _check_receiver_bucket(s, body, receiver, money=holder.bucket is None)
        return await service.transfer(
            s, settings, source=holder, receiver=receiver,
            amount=units_of(body.get("amount"), unit, "amount"), actor=actor_of(key), key=idem,
            request=body, reason=body.get("reason"), stated_fee=_stated_cost(body, line),
            client=client,
        )

    return await _create(db, request, key, idem, body, ActionKind.transfer, act)


async def _check_receiver_bucket(
    s: AsyncSession, body: dict[str, Any], receiver: Line, *, money: bool
) -> None:
    """`receiverBucket.id` says where the transfer goes: money into the receiver's wallet, units
    into a new bucket of the receiver. One of our wallets or buckets named there that is not
    where it would go is refused, not passed over for another (`new`, or no account of ours,
    asks for where it goes)."""
    named = str((body.get("receiverBucket") or {}).get("id") or "")
    try:
        account_id = uuid.UUID(named)
    except ValueError:
        return
    if money and account_id == receiver.wallet_account_id:
        return
    if await service.holder_of(s, account_id) is not None:
        raise ValidationFailed(
            N_("Money goes into the receiving line's wallet, units into a new bucket of it: "
               "name that wallet, or new."),
            field="receiverBucket.id",
        )


def _stated_cost(body: dict[str, Any], line: Line) -> int | None:
    """The fee the caller says the transfer costs (`transferCost`), in minor units of the
    giver's currency; None when it states no value. `transfer` refuses it unless it is the
    fee."""
    cost = body.get("transferCost") or {}
    unit = str(cost.get("unit") or line.currency).strip()
    if unit.upper() != line.currency:
        raise ValidationFailed(N_("The line's currency is {currency}."),
                               field="transferCost.unit", currency=line.currency)
    if cost.get("value") is None:
        return None
    try:
        value = Decimal(str(cost["value"]))
        if not value.is_finite() or value.copy_abs() > MAX_AMOUNT:
            raise LossyConversionError("no amount a fee can be")
        return to_minor(value, line.currency)
    except (InvalidOperation, LossyConversionError) as exc:
        raise ValidationFailed(N_("The amount is not exact in {currency}."),
                               field="transferCost.value", currency=line.currency) from exc


@router.get("/transferBalance", summary="Transfers given by a line")
async def list_transfers(
    key: Read, db: DB, request: Request, response: Response
) -> list[dict[str, Any]]:
    return await _list_actions(ActionKind.transfer, key, db, request, response)


@router.get("/transferBalance/{action_id}", summary="A transfer")
async def get_transfer(
    action_id: str, key: Read, db: DB, request: Request, fields: str | None = None
) -> dict[str, Any]:
    return await _get_action(ActionKind.transfer, action_id, key, db, request, fields)


# --- balanceActionHistory --------------------------------------------------------------------


def _as_history(item: dict[str, Any], msisdn: str) -> dict[str, Any]:
    """Any action, as a history entry: the spec wants a receiver, which is the line itself
    unless it was a transfer."""
    kind = item["@type"]
    out = {**item, "@type": "BalanceActionHistory", "@baseType": kind,
           "href": item["href"].replace(kind[0].lower() + kind[1:], "balanceActionHistory")}
    out.setdefault("receiverLogicalResource", msisdn_ref(msisdn)[0])
    return out


@router.get("/balanceActionHistory", summary="Every top-up, adjustment, reservation and transfer "
            "of a line, newest first")
async def list_history(
    key: Read, db: DB, request: Request, response: Response
) -> list[dict[str, Any]]:
    async with db.read() as s:
        lines = {line.id: line for line in await _lines_selected(s, request)}
        # A line's actions and the transfers it received: both changed its balance.
        where = or_(BalanceAction.line_id.in_(list(lines)),
                    BalanceAction.receiver_line_id.in_(list(lines)))

        async def render(a: BalanceAction) -> dict[str, Any]:
            line = lines.get(a.line_id)
            if line is None:  # a transfer this line received
                assert a.receiver_line_id is not None
                line = lines[a.receiver_line_id]
            return _as_history(await _render(s, request, a), line.msisdn)

        page = await _action_page(s, request, response, where, "BalanceActionHistory", render)
    await _list_read(db, request, response, key, "balanceActionHistory", list(lines.values()))
    return page


@router.get("/balanceActionHistory/{action_id}", summary="One action, whatever its kind")
async def get_history(
    action_id: str, key: Read, db: DB, request: Request, fields: str | None = None
) -> dict[str, Any]:
    _once(request)
    async with db.read() as s:
        try:
            action = await s.get(BalanceAction, uuid.UUID(action_id))
        except ValueError:
            action = None
        if action is None:
            raise BalanceActionNotFound(field="id")
        line = await s.get(Line, action.line_id)
        assert line is not None
        item = _as_history(await _render(s, request, action), line.msisdn)
    await _line_read(db, request, key, "balanceActionHistory", item["id"], line)
    return select_fields(item, fields)


_ALLOWED: dict[str, str] = {}
"""Each TMF path's methods, as its 405's `Allow` lists them (`_refuse_other_methods`)."""
_REFUSALS: set[Callable[..., Any]] = set()
"""Endpoints that only refuse (405): their methods are not the path's."""


def _settled(resource: str) -> Callable[..., Awaitable[Response]]:
    path = f"{BASE_PATH}/{resource}/{{action_id}}"

    async def refuse(action_id: str, _key: Write) -> Response:
        raise MethodNotAllowed(
            N_("A {resource} is done once made; make another to change a balance."),
            headers={"Allow": _ALLOWED[path]}, resource=resource,
        )

    _REFUSALS.add(refuse)
    return refuse


for _resource in ("topupBalance", "adjustBalance", "transferBalance"):
    router.add_api_route(f"/{_resource}/{{action_id}}", _settled(_resource),
                         methods=["PATCH", "DELETE"], include_in_schema=False)


def _no_such_method(allowed: str) -> Callable[..., Awaitable[Response]]:
    async def refuse() -> Response:
        raise MethodNotAllowed(headers={"Allow": allowed})

    return refuse


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _refuse_other_methods() -> None:
    """HEAD is served wherever GET is (the same answer; the server sends no body). Every other
    method on a TMF path is answered here, in the TMF `Error` shape (405), not by the router's
    plain 405 outside the endpoints, with an `Allow` that lists what the path serves: not
    PATCH or DELETE of a settled action (refused), not OPTIONS."""
    served: dict[str, set[str]] = {}
    handled: dict[str, set[str]] = {}
    for route in list(router.routes):
        if not isinstance(route, APIRoute):
            continue
        methods = set(route.methods or ())
        handled.setdefault(route.path, set()).update(methods)
        if route.endpoint in _REFUSALS:
            continue
        if "GET" in methods:
            router.add_api_route(route.path.removeprefix(BASE_PATH), route.endpoint,
                                 methods=["HEAD"], status_code=route.status_code,
                                 include_in_schema=False)
            methods.add("HEAD")
        served.setdefault(route.path, set()).update(methods)
    for path, allowed in served.items():
        _ALLOWED[path] = ", ".join(m for m in HTTP_METHODS if m in allowed)
        others = [m for m in HTTP_METHODS if m not in allowed | handled[path]]
        router.add_api_route(path.removeprefix(BASE_PATH), _no_such_method(_ALLOWED[path]),
                             methods=others, include_in_schema=False)


_refuse_other_methods()


class NoSuchResource(NotFound):
    """A path under the TMF654 prefix that names no resource (a POST's too: the path names
    nothing, not its body)."""

    title = N_("No such TMF654 resource.")


class NotificationsNotSupported(SimchargeError):
    """TMF654's event hub (`/hub`) and listeners (`/listener/…`): not built. Said so (501), not
    answered as a path that names nothing (404), which a client registering at start-up could
    not tell from a wrong base path."""

    status = 501
    slug = "notifications-not-supported"
    title = N_("Event notifications are not supported.")


async def _no_notifications() -> Response:
    raise NotificationsNotSupported(
        N_("This API sends no events and takes no listeners: poll balanceActionHistory "
           "(newest first) for what changed."),
        field="path",
    )


for _path in ("/hub", "/hub/{rest:path}", "/listener/{rest:path}"):
    router.add_api_route(_path, _no_notifications, methods=list(HTTP_METHODS),
                         include_in_schema=False)


async def _no_such_resource(rest: str) -> Response:
    raise NoSuchResource(field="path")


router.add_api_route("/{rest:path}", _no_such_resource, methods=list(HTTP_METHODS),
                     include_in_schema=False)
"""Last: a path under the TMF654 prefix that no route above has is a TMF `Error` 404 (a POST's
too: the path, not the body, names nothing), not the generic problem."""


_COUNT_HEADERS = {
    "X-Total-Count": {"description": "How many items match, over all pages",
                      "schema": {"type": "integer"}},
    "X-Result-Count": {"description": "How many items this page holds",
                       "schema": {"type": "integer"}},
}
_LIST_PARAMETERS = [
    {"name": "logicalResource.id", "in": "query", "schema": {"type": "string"},
     "description": "A line, by its MSISDN (this or `partyAccount.id` is required)"},
    {"name": "partyAccount.id", "in": "query", "schema": {"type": "string", "format": "uuid"},
     "description": "The lines of this customer account"},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {"name": "limit", "in": "query",
     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
    {"name": "fields", "in": "query", "schema": {"type": "string"},
     "description": "Comma-separated attributes to return (TMF630 projection)"},
    {"name": "filters", "in": "query", "style": "form", "explode": True,
     "schema": {"type": "object", "additionalProperties": {"type": "string"}},
     "description": "TMF630 attribute equality on the resource's own attributes, dotted paths "
                    "(`usageType=data,voice`, `status=active`); operators and `sort` are 400"},
]


_UNSUPPORTED = _error("A body of another type than `application/json` (a PATCH's: or "
                      "`application/merge-patch+json`); `Accept-Post`/`Accept-Patch` says which")


def _operation_id(method: str, path: str) -> str:
    """The spec's name of an operation: `listBucket`, `retrieveBucket`, `createTopupBalance`,
    `patchReserveBalance`, `deleteReserveBalance`."""
    resource = path.removeprefix(BASE_PATH).split("/")[1]
    one = path.endswith("}")
    verb = {"POST": "create", "PATCH": "patch", "DELETE": "delete"}.get(
        method, "retrieve" if one else "list")
    return verb + resource[0].upper() + resource[1:]


def _document() -> None:
    """The lists' paging parameters and count headers, and a creation's `Location`, in the
    OpenAPI document (they are read from the request and set on the response by hand); each
    operation under the spec's `operationId`."""
    for route in router.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        methods = route.methods or set()
        route.operation_id = _operation_id(next(iter(methods)), route.path)
        if "GET" in methods and not route.path.endswith("}"):
            route.openapi_extra = {
                "parameters": _LIST_PARAMETERS,
                "responses": {"200": {"headers": _COUNT_HEADERS}},
            }
        elif "POST" in methods:
            route.openapi_extra = {"responses": {"201": {"headers": {"Location": {
                "description": "The new action's `href`", "schema": {"type": "string"}}}},
                "415": _UNSUPPORTED}}
        elif "PATCH" in methods:
            route.openapi_extra = {"responses": {"415": _UNSUPPORTED}}


_document()
