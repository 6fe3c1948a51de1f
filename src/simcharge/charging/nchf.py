"""Real-time charging: 3GPP TS 32.291 Nchf_ConvergedCharging v3 (API 3.1.6), the service side.

A charging data resource (`ChargingSession`) is created, updated and released by a network
function. For each rating group the used units are posted against the reservations that back
the quota granted last, the rest of those reservations is released, and — when the network asks
— a new quota is reserved as pending ledger transfers from the line's buckets (in scope, soonest
expiring first) and then its wallet, at the tariff of the service in the zone where the
subscriber is. Everything of one request is one ledger batch in one transaction.

Idempotency: a create is named by the API key and a hash of its body (a retransmitted create
finds its resource and gets the create's answer again, whatever happened since); an update or
release carrying a sequence number answered before, with the same body, gets the same answer
again (`ChargingSession.answers`) — so does a retransmission (`retransmissionIndicator`) stamped
anew (`Digests`); every transfer and usage record id derives from (resource, sequence number,
rating group), so no retry can charge twice. Units used without a quota (offline charging, or
quota management suspended) are charged at once, as a post event's.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging import alerts
from simcharge.charging.consumption import LinePots, affordable_units, lock_pots, max_raw, take
from simcharge.charging.models import UNIT_OF, ChargingSession, SessionState, UsageRecord
from simcharge.charging.nchf_repository import ChargingSessions
from simcharge.charging.rating import Rate, RatingTable, country_of_mcc
from simcharge.charging.repository import UsageRepository
from simcharge.config import Settings
from simcharge.db import RetryableError, dialect_name, table_of
from simcharge.errors import SimchargeError
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import derived_id
from simcharge.kit.phone import country_of
from simcharge.kit.translations import N_
from simcharge.ledger import chart
from simcharge.ledger.models import TransferKind
from simcharge.ledger.service import NewTransfer, create_transfers
from simcharge.lines.models import Line, LineState

sessions_table = table_of(ChargingSession)
usage_table = table_of(UsageRecord)

ACTIVITY_EVERY = timedelta(minutes=1)
"""`lines.last_activity_at` is written at most this often per line (a hot row otherwise)."""

ANSWERS_KEPT = 8
"""Besides the create's answer, the answers of this many latest updates and releases are kept
for retransmissions; an older sequence number is refused as answered already."""

UNIT_FIELD = {"voice": "time", "data": "totalVolume", "sms": "serviceSpecificUnits"}


class NchfProblem(SimchargeError):
    """An error of Nchf_ConvergedCharging: ProblemDetails with the application error `cause`
    (TS 32.291 table 6.1.7.3-1, TS 29.500 table 5.2.7.2-1) and `invalidParams`."""

    slug = "nchf-error"
    title = N_("The charging request was refused.")

    def __init__(
        self,
        status: int,
        cause: str,
        detail: str,
        *,
        invalid: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(
            detail, field=invalid[0][0] if invalid else None, headers=headers, **params
        )
        self.status = status
        self.cause = cause
        self.invalid = invalid or []

    def extra(self) -> dict[str, Any]:
        body: dict[str, Any] = {"cause": self.cause}
        if self.invalid:
            body["invalidParams"] = [{"param": p, "reason": r} for p, r in self.invalid]
        return body


# --- the request, as far as charging reads it (everything else is accepted and ignored) -------


class _Loose(BaseModel):
    """Strict about the JSON types of what is read (the spec's schema is: `"5"` or `true` is no
    `Uint32`), lenient about what is not read."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, strict=True)


USED_MAX = 2**62 - 1


class Units(_Loose):
    time: int | None = Field(default=None, ge=0, le=2**32 - 1)
    totalVolume: int | None = Field(default=None, ge=0, le=2**64 - 1)
    uplinkVolume: int | None = Field(default=None, ge=0, le=2**64 - 1)
    downlinkVolume: int | None = Field(default=None, ge=0, le=2**64 - 1)
    serviceSpecificUnits: int | None = Field(default=None, ge=0, le=2**64 - 1)

    def of(self, service: str) -> int | None:
        if service == "voice":
            return self.time
        if service == "data":
            if self.totalVolume is not None:
                return self.totalVolume
            if self.uplinkVolume is None and self.downlinkVolume is None:
                return None
            return (self.uplinkVolume or 0) + (self.downlinkVolume or 0)
        return self.serviceSpecificUnits

    def reports_units(self) -> bool:
        """Whether any units are given (of whatever kind)."""
        return not (
            self.time is None
            and self.totalVolume is None
            and self.uplinkVolume is None
            and self.downlinkVolume is None
            and self.serviceSpecificUnits is None
        )


class UsedUnits(Units):
    """Units a network function reports as used: bounded below 2^62 each (the 3GPP type allows
    2^64 − 1), so that a record, an uplink and downlink sum and the ledger's 64-bit columns hold
    them; a report beyond is refused as a bad value, not stored."""

    localSequenceNumber: int
    quotaManagementIndicator: str | None = None
    time: int | None = Field(default=None, ge=0, le=2**32 - 1)
    totalVolume: int | None = Field(default=None, ge=0, le=USED_MAX)
    uplinkVolume: int | None = Field(default=None, ge=0, le=USED_MAX)
    downlinkVolume: int | None = Field(default=None, ge=0, le=USED_MAX)
    serviceSpecificUnits: int | None = Field(default=None, ge=0, le=USED_MAX)


    def offline(self) -> bool:
        """Used without a quota of ours (TS 32.291 `QuotaManagementIndicator`): offline charging,
        or online charging suspended (the SMF went on, failure handling CONTINUE, while the CHF
        was out of reach). Charged at once, as a post event's units are. `ONLINE_CHARGING`, none
        or a value we do not know: used from the quota granted."""
        return self.quotaManagementIndicator in OFFLINE_INDICATORS


OFFLINE_INDICATORS = frozenset({"OFFLINE_CHARGING", "QUOTA_MANAGEMENT_SUSPENDED"})


class UnitUsage(_Loose):
    ratingGroup: int = Field(ge=0, le=2**32 - 1)
    requestedUnit: Units | None = None
    usedUnitContainer: list[UsedUnits] = []


class NFIdentification(_Loose):
    nodeFunctionality: str
    nFName: str | None = None
    nFPLMNID: dict[str, Any] | None = None


class PlmnId(_Loose):
    mcc: str | None = None


class _Area(_Loose):
    """A TAI, NCGI or ECGI: only its PLMN is read."""

    plmnId: PlmnId | None = None


class _RanLocation(_Loose):
    tai: _Area | None = None
    ncgi: _Area | None = None
    ecgi: _Area | None = None


class UserLocation(_Loose):
    nrLocation: _RanLocation | None = None
    eutraLocation: _RanLocation | None = None


class UserInformation(_Loose):
    servedGPSI: str | None = None


class ChargingInformation(_Loose):
    """`pDUSessionChargingInformation` or `sMSChargingInformation`, as far as charging reads
    it (TS 32.291): the served GPSI and the user's location. Typed, so that an object of
    another JSON type where one is expected is a 400 naming it, like any other bad field."""

    userInformation: UserInformation | None = None
    userLocationinfo: UserLocation | None = None


class ChargingDataRequest(_Loose):
    nfConsumerIdentification: NFIdentification
    invocationTimeStamp: AwareDatetime
    invocationSequenceNumber: int = Field(ge=0, le=2**32 - 1)
    subscriberIdentifier: str | None = None
    retransmissionIndicator: bool | None = None
    oneTimeEvent: bool | None = None
    oneTimeEventType: str | None = None
    multipleUnitUsage: list[UnitUsage] = []
    pDUSessionChargingInformation: ChargingInformation | None = None
    sMSChargingInformation: ChargingInformation | None = None


def one_time_kind(req: ChargingDataRequest) -> str | None:
    """`IEC` (immediate event charging: units requested, charged at once), `PEC` (post event
    charging: units used, rated and charged at once) or None (a session)."""
    if not req.oneTimeEvent:
        return None
    kind = req.oneTimeEventType or "IEC"
    return kind if kind in ("IEC", "PEC") else None


def _check_one_time(req: ChargingDataRequest) -> None:
    """An immediate event (IEC) requests units and reports none; a post event (PEC) reports
    the units used and requests none: the other is refused by name, nothing charged. A type of
    one-time event other than these is refused too (it is no session: nothing would end it)."""
    kind = one_time_kind(req)
    if req.oneTimeEvent and kind is None:
        raise NchfProblem(
            400,
            "MANDATORY_IE_INCORRECT",
            N_("The charging request is not valid."),
            invalid=[("/oneTimeEventType", "a one-time event is IEC or PEC")],
        )
    if kind is None:
        return
    invalid = []
    for i, entry in enumerate(req.multipleUnitUsage):
        if kind == "IEC" and entry.usedUnitContainer:
            invalid.append((f"/multipleUnitUsage/{i}/usedUnitContainer",
                            "an immediate event (IEC) requests units; it reports none used"))
        if kind == "IEC" and _asks_nothing(entry.requestedUnit):
            # An event charged at once for no units would be an event given away: refused.
            invalid.append((f"/multipleUnitUsage/{i}/requestedUnit",
                            "an immediate event (IEC) requests at least one unit"))
        if kind == "PEC" and entry.requestedUnit is not None:
            invalid.append((f"/multipleUnitUsage/{i}/requestedUnit",
                            "a post event (PEC) reports the units used; it requests none"))
    if invalid:
        raise NchfProblem(
            400, "MANDATORY_IE_INCORRECT", N_("The charging request is not valid."),
            invalid=invalid,
        )


def _asks_nothing(requested: Units | None) -> bool:
    """A `requestedUnit` whose amounts, all given, are 0 (none given leaves it to us)."""
    if requested is None:
        return False
    given = (requested.time, requested.totalVolume, requested.uplinkVolume,
             requested.downlinkVolume, requested.serviceSpecificUnits)  # fmt: skip
    amounts = [n for n in given if n is not None]
    return bool(amounts) and not any(amounts)


def parse_request(body: bytes) -> ChargingDataRequest:
    try:
        req = ChargingDataRequest.model_validate_json(body or b"null")
    except ValidationError as exc:
        invalid = []
        for e in exc.errors():
            path = "/" + "/".join(str(p) for p in e["loc"])
            invalid.append((path, str(e["msg"])))
        if any(
            e["type"] == "json_invalid" or (e["type"] == "model_type" and not e["loc"])
            for e in exc.errors()
        ):
            raise NchfProblem(
                400, "INVALID_MSG_FORMAT", N_("The body is not a JSON object.")
            ) from exc
        # One cause for the problem (TS 29.500 5.2.7.2): that of the first member listed in
        # `invalidParams` (in the body's order), so that `cause` and `invalidParams[0]` agree.
        first = exc.errors()[0]["type"] if exc.errors() else ""
        cause = "MANDATORY_IE_MISSING" if first == "missing" else "MANDATORY_IE_INCORRECT"
        raise NchfProblem(
            400, cause, N_("The charging request is not valid."), invalid=invalid
        ) from exc
    _check_one_time(req)
    return req


def _subscriber(req: ChargingDataRequest) -> str | None:
    if req.subscriberIdentifier:
        return req.subscriberIdentifier
    info = req.pDUSessionChargingInformation
    if info is not None and info.userInformation is not None:
        return info.userInformation.servedGPSI
    return None


def _mcc_of_location(location: UserLocation | None) -> str | None:
    if location is None:
        return None
    for place in (location.nrLocation, location.eutraLocation):
        if place is not None:
            for area in (place.tai, place.ncgi, place.ecgi):
                if area is not None and area.plmnId is not None and area.plmnId.mcc is not None:
                    return area.plmnId.mcc
    return None


UNKNOWN_COUNTRY = "ZZ"
"""A location whose MCC we do not know: rated in the default zone."""


def location_country(req: ChargingDataRequest) -> str | None:
    """Where the subscriber is: the user location's PLMN, else the consumer NF's PLMN; None
    when the request says neither (the line's home country is used then)."""
    mcc: str | None = None
    for info in (req.pDUSessionChargingInformation, req.sMSChargingInformation):
        if info is not None:
            mcc = mcc or _mcc_of_location(info.userLocationinfo)
    plmn = req.nfConsumerIdentification.nFPLMNID
    if mcc is None and isinstance(plmn, dict) and isinstance(plmn.get("mcc"), str):
        mcc = plmn["mcc"]
    if mcc is None:
        return None
    return country_of_mcc(mcc) or UNKNOWN_COUNTRY


# --- answering --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NchfAnswer:
    status: int
    body: dict[str, Any] | None
    ref: uuid.UUID


def _timestamp(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_SUBSCRIBER = re.compile(r"(imsi|msisdn)-([0-9]{1,15})")
"""A SUPI of an IMSI or a GPSI of an E.164 number: only these can name a line (anything else —
a NAI, a NUL, a letter — is looked up nowhere)."""


NOT_A_SUBSCRIPTION = frozenset({LineState.available.value, LineState.terminated.value})
"""Lines that are no subscriber's: a create naming one is `USER_UNKNOWN` (404). A line in grace
or frozen is a subscriber's, denied service per rating group (`END_USER_SERVICE_DENIED`)."""


async def _find_line(session: AsyncSession, subscriber: str) -> Line:
    if not subscriber.startswith(("imsi-", "msisdn-")):
        raise NchfProblem(
            404,
            "USER_UNKNOWN",
            N_("The subscriber {subscriber} is not known (use imsi-… or msisdn-…)."),
            subscriber=subscriber,
        )
    found = _SUBSCRIBER.fullmatch(subscriber)
    line = None
    if found is not None:
        kind, digits = found.groups()
        where = Line.imsi == digits if kind == "imsi" else Line.msisdn == "+" + digits
        line = (await session.execute(select(Line).where(where))).scalar_one_or_none()
    if line is None or line.state in NOT_A_SUBSCRIPTION:
        # A line in stock (never sold) or terminated (gone) is nobody's subscription: unknown,
        # as a number never issued is (nothing says which), and nothing is written.
        raise NchfProblem(
            404,
            "USER_UNKNOWN",
            N_("The subscriber {subscriber} is not known."),
            subscriber=subscriber,
        )
    return line


def _names_line(identifier: str, line: Line) -> bool:
    """Whether `identifier` (`imsi-…`, `msisdn-…`) is `line`'s."""
    found = _SUBSCRIBER.fullmatch(identifier)
    if found is None:
        return False
    kind, digits = found.groups()
    return line.imsi == digits if kind == "imsi" else line.msisdn == "+" + digits


def check_identities(req: ChargingDataRequest, line: Line) -> None:
    """Every identity of the subscriber the request gives names `line` (the one it is charged
    to: the create's subscriber's, or the session's): `subscriberIdentifier`, and a
    `servedGPSI` given as an MSISDN (another kind of GPSI, an external identifier, names no line
    of ours and is not compared). One naming another line is refused by name, nothing charged —
    not charged to whichever came first."""
    invalid = []
    if req.subscriberIdentifier and not _names_line(req.subscriberIdentifier, line):
        invalid.append(("/subscriberIdentifier", "not the subscriber of this charging session"))
    for name, info in (
        ("pDUSessionChargingInformation", req.pDUSessionChargingInformation),
        ("sMSChargingInformation", req.sMSChargingInformation),
    ):
        gpsi = info.userInformation.servedGPSI if info and info.userInformation else None
        if gpsi is not None and gpsi.startswith("msisdn-") and not _names_line(gpsi, line):
            reason = (
                "another subscriber than subscriberIdentifier"
                if req.subscriberIdentifier
                else "not the subscriber of this charging session"
            )
            invalid.append((f"/{name}/userInformation/servedGPSI", reason))
    if invalid:
        raise NchfProblem(
            400, "MANDATORY_IE_INCORRECT", N_("The charging request is not valid."),
            invalid=invalid,
        )


def line_may_charge(line: Line, now: datetime) -> bool:
    """Only an active line within its validity may use chargeable services: a line in grace
    (validity over), frozen, suspended (lost or stolen), terminated or still in stock is denied."""
    if line.state != LineState.active.value:
        return False
    return line.validity_end is None or line.validity_end > now


class Charging:
    """One request's work: the line's pots locked, the ledger batch and the records built."""

    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        table: RatingTable,
        line: Line,
        cs: ChargingSession,
        seq: int,
        now: datetime,
    ) -> None:
        self.session = session
        self.settings = settings
        self.table = table
        self.line = line
        self.cs = cs
        self.seq = seq
        self.now = now
        self.transfers: list[NewTransfer] = []
        self.records: list[dict[str, Any]] = []
        self.shard = chart.shard_of(line.id)
        self.pots: LinePots | None = None
        self.before: dict[uuid.UUID, alerts.Snapshot] = {}

    async def load_pots(self) -> LinePots:
        if self.pots is None:
            found = await lock_pots(self.session, [self.line.id])
            self.pots = found[self.line.id]
            self.before = alerts.snapshot([self.pots.wallet, *self.pots.buckets])
        return self.pots

    def _tid(self, *parts: object) -> uuid.UUID:
        return derived_id("nchf", self.cs.id, self.seq, *parts)

    def _counterparty(self, unit: str) -> uuid.UUID:
        if unit == self.line.currency:
            return chart.usage_revenue(unit, self.shard).id
        return chart.consumption(unit, self.shard).id

    async def report_used(
        self, rg: int, group: dict[str, Any], used: int, rate: Rate | None, *, tag: str = ""
    ) -> None:
        """Post what was used against the group's reservations; release the rest. The usage
        is rated and recorded in the zone the group's quota was granted in (`rate`); with no
        rate at all nothing is posted and all of it is recorded as unbilled. `tag` names a
        second record of the group in the same request (`offline`: used without a quota)."""
        pots = await self.load_pots()
        holds: list[dict[str, Any]] = group.pop("holds", [])
        old_used = group["used"]
        new_used = old_used + used
        if rate is None:
            left = rated = 0
        else:
            left = rated = rate.rated(new_used) - rate.rated(old_used)
        taken: list[list[Any]] = []
        from_buckets = from_wallet = money_total = 0
        for h in holds:
            account = uuid.UUID(h["a"])
            pot = pots.pot(account)
            n = min(left, h["n"])
            if h["w"]:
                assert rate is not None or n == 0
                money = 0
                if n and rate is not None:
                    money = max(0, min(h["m"], rate.cost(group["wu"] + n) - group["wm"]))
                amount, reserved = money, h["m"]
                group["wu"] += n
                group["wm"] += money
                from_wallet += n
                money_total += money
            else:
                amount, reserved = n, h["n"]
                from_buckets += n
            left -= n
            if not h["t"]:
                continue  # units already paid for: nothing was reserved
            pending_id = uuid.UUID(h["t"])
            kind = TransferKind.post_pending if amount else TransferKind.void_pending
            self.transfers.append(
                NewTransfer(
                    id=derived_id("nchf-resolve", pending_id),
                    kind=kind,
                    pending_id=pending_id,
                    amount=amount if amount else None,
                    code="usage",
                    reference=f"nchf:{self.cs.id}",
                )
            )
            if pot is not None:
                pot.available += reserved - amount
                pot.posted_balance -= amount
            if amount:
                taken.append([str(account), amount])
        group["used"] = new_used
        if used > 0:
            self.records.append(
                {
                    "id": derived_id("usage", "nchf", self.cs.id, self.seq, rg, *_tagged(tag)),
                    "source": "nchf",
                    "external_id": f"{self.cs.id}/{self.seq}/{rg}" + (f"/{tag}" if tag else ""),
                    "line_id": self.line.id,
                    "service": group["service"],
                    "country": group.get("country", self.cs.country),
                    "zone": group.get("zone", self.cs.zone) or "",
                    "quantity": used,
                    "rated": rated if rate is not None else used,
                    "from_buckets": from_buckets,
                    "from_wallet": from_wallet,
                    "charge": money_total,
                    "currency": self.line.currency,
                    "unbilled": left if rate is not None else used,
                    "taken": taken,
                    "session_id": self.cs.id,
                    "started_at": self.now,
                    "created_at": self.now,
                }
            )

    async def grant(
        self,
        rg: int,
        group: dict[str, Any],
        wanted: int,
        rate: Rate,
        *,
        all_or_nothing: bool,
        tag: str = "",
    ) -> tuple[int, bool]:
        """Reserve quota for up to `wanted` units: returns (granted, final). The group keeps
        `rate`: what it uses is rated at the tariff its quota was priced at. `tag` keeps the
        transfers of a second reservation of the group in the same request apart (`offline`)."""
        pots = await self.load_pots()
        group["rate"] = rate.stored()
        unit = UNIT_OF_SERVICE[group["service"]]
        used, wu, wm = group["used"], group["wu"], group["wm"]
        in_buckets = sum(p.available for p in pots.usable(unit, rate.zone, self.now))
        capacity = in_buckets + affordable_units(rate, pots.wallet.available, wu, wm)
        reachable = max_raw(rate, rate.rated(used) + capacity) if capacity < 2**61 else 2**62
        granted = max(0, min(wanted, reachable - used))
        if all_or_nothing and granted < wanted:
            granted = 0
        if granted == 0:
            return 0, True
        need = rate.rated(used + granted) - rate.rated(used)
        taking = take(
            pots, rate, unit, need, self.now, wallet_units_before=wu, wallet_paid_before=wm
        )
        holds: list[dict[str, Any]] = []
        for i, (pot, n) in enumerate(taking.from_buckets):
            tid = self._tid(rg, *_tagged(tag), "b", i)
            self.transfers.append(
                NewTransfer(
                    id=tid,
                    amount=n,
                    unit=unit,
                    debit_account_id=pot.account_id,
                    credit_account_id=self._counterparty(unit),
                    kind=TransferKind.pending,
                    code="quota",
                    reference=f"nchf:{self.cs.id}",
                )
            )
            holds.append({"t": str(tid), "a": str(pot.account_id), "n": n, "m": 0, "w": False})
        if taking.wallet_units:
            tid = self._tid(rg, *_tagged(tag), "w")
            wallet = pots.wallet
            if taking.wallet_money:
                self.transfers.append(
                    NewTransfer(
                        id=tid,
                        amount=taking.wallet_money,
                        unit=self.line.currency,
                        debit_account_id=wallet.account_id,
                        credit_account_id=self._counterparty(self.line.currency),
                        kind=TransferKind.pending,
                        code="quota",
                        reference=f"nchf:{self.cs.id}",
                    )
                )
                holds.append(
                    {
                        "t": str(tid),
                        "a": str(wallet.account_id),
                        "n": taking.wallet_units,
                        "m": taking.wallet_money,
                        "w": True,
                    }
                )
            else:
                # Units already paid for (the rest of a started increment): nothing to reserve.
                holds.append(
                    {
                        "t": "",
                        "a": str(wallet.account_id),
                        "n": taking.wallet_units,
                        "m": 0,
                        "w": True,
                    }
                )
        group["holds"] = holds
        final = reachable <= used + granted
        return granted, final

    def chain(self) -> list[NewTransfer]:
        """The request's transfers as one linked chain: all or none."""
        last = len(self.transfers) - 1
        return [replace(t, linked=i < last) for i, t in enumerate(self.transfers)]

    async def commit_ledger(self) -> None:
        if self.transfers:
            await _post(self.session, self.chain(), self.now)

    async def finish(self, *, created: bool) -> None:
        """Write what the request did: the session (`created`: new, written by the ORM; else
        written here) and its usage records, the alerts, the line's activity — and the ledger
        batch last: the operator accounts it credits are shared by many lines, so their row
        locks are held only for the batch and the commit."""
        if self.pots is not None:
            contact = alerts.LineContact(
                self.line.id, self.line.account_id, self.line.msisdn, self.line.currency
            )
            jobs = alerts.alerts_for(
                contact,
                [self.pots.wallet, *self.pots.buckets],
                self.before,
                low_balance=self.settings.charging_low_balance,
            )
            await alerts.send_alerts(self.session, jobs)
        if self.records:
            # Chargeable activity is usage: a quota refused, or granted and not used, is not.
            last = self.line.last_activity_at
            if last is None or self.now - last >= ACTIVITY_EVERY:
                await UsageRepository(self.session).set_last_activity({self.line.id: self.now})
        if created:
            if self.records:
                await self.session.execute(usage_table.insert(), self.records)
            await self.session.flush()
        else:
            await ChargingSessions(self.session).save(self.cs, self.records)
        await self.commit_ledger()


def _tagged(tag: str) -> tuple[str, ...]:
    """The parts a tag adds to derived ids: none for the untagged (their ids stay as they were)."""
    return (tag,) if tag else ()


async def _post(session: AsyncSession, batch: list[NewTransfer], now: datetime) -> None:
    """Write charging's transfers; the ledger refusing one is our fault (a 500, all undone)."""
    outcomes = await create_transfers(session, batch, now=now)
    failed = next((o for o in outcomes if not o.ok), None)
    if failed is not None:
        raise NchfProblem(
            500,
            "SYSTEM_FAILURE",
            N_("The ledger refused a charging transfer: {reason}."),
            reason=failed.result.value,
        )


UNIT_OF_SERVICE = {s.value: u for s, u in UNIT_OF.items()}


def _requested(settings: Settings, service: str, asked: int | None) -> int:
    """The quota to try for: what was asked (the default when no amount was: None), at most
    the maximum. A request for 0 units asks for no quota; it does not come here."""
    if service == "voice":
        default, most = (
            settings.charging_quota_voice_seconds,
            settings.charging_max_quota_voice_seconds,
        )
    elif service == "data":
        default, most = settings.charging_quota_data_bytes, settings.charging_max_quota_data_bytes
    else:
        default, most = 1, 1000
    return min(default if asked is None else asked, most)


def _rate(work: Charging, service: str, zone: str | None) -> Rate | None:
    return work.table.rate(service, zone, work.line.currency) if zone else None


def _granted_rate(work: Charging, group: dict[str, Any], zone: str | None) -> Rate | None:
    """The tariff the group's quota was granted at in `zone` (kept by `Charging.grant`), else —
    a session granted before the groups kept it — the tariff in force there now."""
    kept = group.get("rate")
    if kept is not None:
        rate = Rate.from_stored(group["service"], work.line.currency, kept)
        if rate.zone == zone:
            return rate
    return _rate(work, group["service"], zone)


async def _process(
    work: Charging,
    req: ChargingDataRequest,
    *,
    release: bool,
    country: str | None,
    zone: str | None,
) -> list[dict[str, Any]]:
    """Every rating group of the request (and of the session's reservations): post, release,
    grant. Used units are rated where their quota was granted; new quota where the subscriber
    is now (`country`, `zone`). Returns the `multipleUnitInformation`."""
    settings, cs, now = work.settings, work.cs, work.now
    groups: dict[str, Any] = {k: dict(v) for k, v in cs.groups.items()}
    allowed = line_may_charge(work.line, now)
    kind = one_time_kind(req)
    one_time, post_event = kind == "IEC", kind == "PEC"
    answers: list[dict[str, Any]] = []
    # A rating group may come in several entries (one per service, say): all their used units
    # count, and their requests add up, for the one quota of the group.
    reported: dict[int, list[UnitUsage]] = {}
    for entry in req.multipleUnitUsage:
        reported.setdefault(entry.ratingGroup, []).append(entry)
    services = settings.rating_groups
    for rg in sorted({*reported, *(int(k) for k in groups)}):
        entries = reported.get(rg)
        key = str(rg)
        known = groups.get(key)
        # A group of the session keeps its service: its reservations are released however the
        # rating groups are configured now.
        service = known["service"] if known is not None else services.get(rg)
        if service is None:
            answers.append({"ratingGroup": rg, "resultCode": "RATING_FAILED"})
            continue
        used = offline = 0
        if entries is not None:
            online, offline, unrated = _used_units(entries, service)
            used = online + offline
            if unrated is not None:
                if release:
                    # A release answers 204, without a result per group: refused whole.
                    raise _unrated_problem(req, rg, service, *unrated)
                # Used units we cannot rate (RATING_FAILED, TS 32.291: a value "not supported
                # in the rating"): the group is left as it was — nothing posted nor released, no
                # new quota; its next report, the release or the timeout settles its quota.
                answers.append({"ratingGroup": rg, "resultCode": "RATING_FAILED"})
                continue
        group = groups.setdefault(key, {"service": service, "used": 0, "wu": 0, "wm": 0})
        if entries is not None and group["used"] + used > USED_MAX:
            # Nothing real reports this much; refused whole (the transaction is undone).
            where = f"/multipleUnitUsage/{req.multipleUnitUsage.index(entries[0])}"
            reason = f"rating group {rg}: the session's usage would pass {USED_MAX}"
            raise NchfProblem(
                400,
                "MANDATORY_IE_INCORRECT",
                N_("The charging request is not valid."),
                invalid=[(where + "/usedUnitContainer", reason)],
            )
        if entries is None and not release:
            continue  # not reported: its quota stands
        if post_event and entries is not None:
            answers.append(await _post_event(work, rg, group, used, allowed, country, zone))
            continue
        then = group.get("zone", cs.zone)
        if group.get("holds") or used - offline:
            # Used where its quota was granted: at the tariff it was granted at, from its buckets.
            await work.report_used(rg, group, used - offline, _granted_rate(work, group, then))
        offline_code = None
        if offline:
            # Used without a quota (offline, or quota management suspended): charged at once.
            offline_code = await _charge_offline(
                work, rg, group, offline, allowed, country, zone, moved=then != zone
            )
            then = zone
        if release or entries is None:
            continue
        if then != zone:
            # Used in another zone from now on: its rating (rounding, the minimum, costs
            # summed over the call) starts again there.
            group.update(used=0, wu=0, wm=0)
            group.pop("rate", None)
        group.update(zone=zone, country=country)
        rate = _rate(work, service, zone)
        answer: dict[str, Any] = {"ratingGroup": rg}
        requests = [e.requestedUnit for e in entries if e.requestedUnit is not None]
        amounts = [n for u in requests if (n := u.of(service)) is not None]
        asked = sum(amounts) if amounts else None
        # A request for no units (an amount of 0) asks for no quota: the group reports its
        # usage only. A `requestedUnit` without an amount of the service's unit leaves the
        # amount to us (the default).
        wants = (bool(requests) or one_time) and asked != 0
        if not wants:
            answer["resultCode"] = offline_code or "SUCCESS"
        elif rate is None:
            answer["resultCode"] = "RATING_FAILED"
        elif not allowed:
            answer["resultCode"] = "END_USER_SERVICE_DENIED"
        else:
            wanted = _requested(settings, service, asked)
            _rated_from_now_at(group, rate)
            granted, final = await work.grant(rg, group, wanted, rate, all_or_nothing=one_time)
            if granted == 0:
                answer["resultCode"] = "QUOTA_LIMIT_REACHED"
            else:
                answer["resultCode"] = "SUCCESS"
                answer["grantedUnit"] = {UNIT_FIELD[service]: granted}
                if one_time:
                    # Immediate event charging: the event is charged now.
                    await work.report_used(rg, group, granted, rate)
                else:
                    answer["validityTime"] = settings.charging_validity_seconds
                    if final:
                        answer["finalUnitIndication"] = {"finalUnitAction": "TERMINATE"}
        answers.append(answer)
    cs.groups = groups
    return answers


def _rated_from_now_at(group: dict[str, Any], rate: Rate | None) -> None:
    """The group is rated at `rate` from now on (None: no tariff is in force, what it uses
    next is not rated). If that is not the tariff it was rated at — the catalog changed it
    meanwhile — its rating (rounding, the minimum, costs summed over the call) starts again, as
    when the subscriber moves zone: summed with the units charged at the old tariff, the new
    one's price of the whole call less what was paid would charge those units again at the
    difference (or give the next ones away, for a lower price). Only between quotas: the group
    holds no reservation here."""
    kept = group.get("rate")
    stored = rate.stored() if rate is not None else None
    if kept is not None and list(kept) != stored:
        group.update(used=0, wu=0, wm=0)
    if stored is None:
        group.pop("rate", None)
    else:
        group["rate"] = stored


def _used_units(
    entries: list[UnitUsage], service: str
) -> tuple[int, int, tuple[UnitUsage, UsedUnits] | None]:
    """The units the group's entries report used, in the unit its service counts — used from
    the quota granted (online) and used without one (`UsedUnits.offline`) — and the first
    container that reports units only in another (`totalVolume` for voice, say), if one does.
    A container reporting no units at all counts nothing."""
    online = offline = 0
    for entry in entries:
        for container in entry.usedUnitContainer:
            n = container.of(service)
            if n is None:
                if container.reports_units():
                    return online, offline, (entry, container)
            elif container.offline():
                offline += n
            else:
                online += n
    return online, offline, None


async def _charge_offline(
    work: Charging,
    rg: int,
    group: dict[str, Any],
    used: int,
    allowed: bool,
    country: str | None,
    zone: str | None,
    *,
    moved: bool,
) -> str:
    """Units a session's group reports used without a quota (`UsedUnits.offline`): rated where
    the subscriber is and charged at once as a post event's are — buckets in scope first, then
    the wallet; what the line cannot pay, may not be charged for or has no tariff for is
    recorded unbilled. They were used since the group was last rated, so at the tariff it was
    rated at then (kept by the group), as the units of a quota granted then are; a group rated
    for the first time here, at the tariff in force. What it uses after this request is rated
    at the tariff in force now. Once: its transfers and record derive from the request. Returns
    the group's result code for them. `moved`: the group's quota was granted in another zone,
    whose rating (rounding, minimum) does not go on here."""
    if moved:
        group.update(used=0, wu=0, wm=0)
        group.pop("rate", None)
    group.update(zone=zone, country=country)
    rate = _granted_rate(work, group, zone)
    granted = 0
    if rate is not None and allowed:
        granted, _ = await work.grant(rg, group, used, rate, all_or_nothing=False, tag="offline")
    await work.report_used(rg, group, used, rate, tag="offline")
    _rated_from_now_at(group, _rate(work, group["service"], zone))
    if rate is None:
        return "RATING_FAILED"
    if not allowed:
        return "END_USER_SERVICE_DENIED"
    return "QUOTA_LIMIT_REACHED" if granted < used else "SUCCESS"


def _unrated_problem(
    req: ChargingDataRequest, rg: int, service: str, entry: UnitUsage, container: UsedUnits
) -> NchfProblem:
    i = next(k for k, e in enumerate(req.multipleUnitUsage) if e is entry)
    j = next(k for k, c in enumerate(entry.usedUnitContainer) if c is container)
    counts = "totalVolume or uplinkVolume + downlinkVolume" if service == "data" else (
        UNIT_FIELD[service]
    )
    reason = f"rating group {rg} ({service}) counts {counts}; this container reports other units"
    return NchfProblem(
        400,
        "MANDATORY_IE_INCORRECT",
        N_("The charging request is not valid."),
        invalid=[(f"/multipleUnitUsage/{i}/usedUnitContainer/{j}", reason)],
    )


async def _post_event(
    work: Charging,
    rg: int,
    group: dict[str, Any],
    used: int,
    allowed: bool,
    country: str | None,
    zone: str | None,
) -> dict[str, Any]:
    """Post event charging: the event happened; what it used is rated where the subscriber is
    and charged at once — buckets first, then the wallet — as far as the line can pay and may
    be charged. The rest is recorded unbilled, and the answer says why: `QUOTA_LIMIT_REACHED`
    (not enough), `END_USER_SERVICE_DENIED` (a line that may not be charged), `RATING_FAILED`
    (no tariff here)."""
    group.update(zone=zone, country=country)
    rate = _rate(work, group["service"], zone)
    granted = 0
    if rate is not None and allowed and used:
        granted, _ = await work.grant(rg, group, used, rate, all_or_nothing=False)
    await work.report_used(rg, group, used, rate)
    if rate is None:
        code = "RATING_FAILED"
    elif not allowed and used:
        code = "END_USER_SERVICE_DENIED"
    elif granted < used:
        code = "QUOTA_LIMIT_REACHED"
    else:
        code = "SUCCESS"
    return {"ratingGroup": rg, "resultCode": code}


def _response(
    req: ChargingDataRequest, now: datetime, units: list[dict[str, Any]]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "invocationTimeStamp": _timestamp(now),
        "invocationSequenceNumber": req.invocationSequenceNumber,
    }
    if units:
        body["multipleUnitInformation"] = units
    return body


@dataclass(frozen=True, slots=True)
class Digests:
    """The request's identity: the SHA-256 of its JSON (keys sorted) without
    `retransmissionIndicator` (`exact`: a request sent again as it was), and also without
    `invocationTimeStamp` (`resent`): TS 32.290 names a retransmission by the indicator and the
    sequence number, and a network function may stamp it anew. `resent` finds the kept answer
    only for a request carrying `retransmissionIndicator: true` — two creates of the same
    content (two SMS alike) at two times are two events."""

    exact: str
    resent: str


def _hash(body: bytes) -> Digests:
    doc = json.loads(body)
    doc.pop("retransmissionIndicator", None)
    exact = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    doc.pop("invocationTimeStamp", None)
    resent = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return Digests(exact, resent)


def _answers_again(
    kept: dict[str, Any], op: str, req: ChargingDataRequest, digests: Digests
) -> bool:
    """Whether the kept answer `kept` is the answer to this request: the same operation and
    body — or, for a retransmission, the same body but for its time stamp (answers kept
    before the second digest was stored are matched exactly only). The first transmission
    arriving after its retransmission was answered (`ri`: the answered one carried the
    indicator) is matched the same way — only if it is stamped no later than the
    retransmission (`at`): a first transmission always is, and a new event alike, stamped
    after, is a new event (two SMS alike are two events)."""
    if kept["op"] != op:
        return False
    if kept["hash"] == digests.exact:
        return True
    if kept.get("resent") != digests.resent:
        return False
    if req.retransmissionIndicator:
        return True
    # The answered one was the retransmission: this is its first transmission, arriving after
    # it, if stamped before it.
    if not kept.get("ri") or not isinstance(kept.get("at"), str):
        return False
    return req.invocationTimeStamp <= datetime.fromisoformat(kept["at"])


def _remember(
    cs: ChargingSession,
    seq: int,
    op: str,
    digests: Digests,
    body: dict[str, Any] | None,
    *,
    resent: datetime | None = None,
) -> None:
    """Keep the answer to request `seq`: the create's always, the latest `ANSWERS_KEPT` others.
    `resent`: the request was a retransmission (`ri`) stamped then, whose first transmission,
    stamped before, may follow."""
    answers = dict(cs.answers)
    kept: dict[str, Any] = {
        "op": op, "hash": digests.exact, "resent": digests.resent, "body": body
    }
    if resent is not None:
        kept["ri"] = True
        kept["at"] = resent.isoformat()
    answers[str(seq)] = kept
    others = sorted(int(k) for k, v in answers.items() if v["op"] != "create")
    for old in others[:-ANSWERS_KEPT]:
        del answers[str(old)]
    cs.answers = answers


def _create_answer(cs: ChargingSession, req: ChargingDataRequest) -> dict[str, Any]:
    """What the create of `cs` was answered. A session opened before answers were kept by
    sequence number and updated since has lost it: its creation time and the create's number
    (the retransmission carries the same body), without the quota granted then."""
    for kept in cs.answers.values():
        if kept["op"] == "create":
            body: dict[str, Any] = kept["body"]
            return body
    return {
        "invocationTimeStamp": _timestamp(cs.created_at),
        "invocationSequenceNumber": req.invocationSequenceNumber,
    }


async def create_charging_data(
    session: AsyncSession,
    settings: Settings,
    table: RatingTable,
    *,
    client: str,
    body: bytes,
    now: datetime | None = None,
    client_aliases: Sequence[str] = (),
) -> NchfAnswer:
    """Nchf_ConvergedCharging_Create: a new charging data resource, its first quotas. The
    resource is the `client`'s (the API key's client, across rotations); a retransmitted create
    finds the one it made, also when it was made under one of `client_aliases` (the client's key
    prefixes, which owned sessions before the client id was kept)."""
    now = now or utcnow()
    req = parse_request(body)
    digests = _hash(body)
    await _lock_create(session, client, digests)
    digest = digests.exact
    ref = derived_id("nchf-session", client, digest)
    refs = [ref, *(derived_id("nchf-session", a, digest) for a in client_aliases if a != client)]
    existing = (
        await session.execute(
            select(ChargingSession).where(ChargingSession.id.in_(refs)).limit(1)
        )
    ).scalar_one_or_none() if len(refs) > 1 else await session.get(ChargingSession, ref)
    if existing is not None:
        return NchfAnswer(201, _create_answer(existing, req), existing.id)
    subscriber = _subscriber(req)
    if not subscriber:
        raise NchfProblem(
            400,
            "CHARGING_FAILED",
            N_("The request names no subscriber."),
            invalid=[("/subscriberIdentifier", "a SUPI (imsi-…) or a GPSI (msisdn-…) is required")],
        )
    line = await _find_line(session, subscriber)
    check_identities(req, line)
    # Also without the indicator: the first transmission of a create whose retransmission,
    # stamped anew, arrived first finds the session the retransmission opened.
    resent = await _resent_create(session, line, [client, *client_aliases], req, digests, now)
    if resent is not None:
        return NchfAnswer(201, _create_answer(resent, req), resent.id)
    country = location_country(req) or country_of(line.msisdn)
    cs = ChargingSession(
        id=ref,
        line_id=line.id,
        client=client[:64],
        subscriber=subscriber[:64],
        state=SessionState.open.value,
        zone=table.zone_of(country),
        country=country,
        sequence=req.invocationSequenceNumber,
        answers={},
        groups={},
        deadline=_deadline(settings, now),
        created_at=now,
        updated_at=now,
    )
    work = Charging(session, settings, table, line, cs, req.invocationSequenceNumber, now)
    units = await _process(work, req, release=False, country=cs.country, zone=cs.zone)
    if one_time_kind(req) is not None:  # one request, and the resource is closed
        cs.state = SessionState.released.value
    answer = _response(req, now, units)
    _remember(
        cs, req.invocationSequenceNumber, "create", digests, answer,
        resent=req.invocationTimeStamp if req.retransmissionIndicator else None,
    )
    session.add(cs)
    try:
        await session.flush()
    except IntegrityError as exc:
        # The same create, retransmitted while the first was being answered: answer it again.
        raise RetryableError("concurrent create") from exc
    await work.finish(created=True)
    return NchfAnswer(201, answer, ref)


async def _lock_create(session: AsyncSession, client: str, digests: Digests) -> None:
    """Take the create's content (the client and the body but for its time stamp and
    retransmission indicator) for this transaction, before anything is read: a retransmission
    stamped anew that arrives while the first transmission is still being answered waits for it
    to commit, then finds its session (`_resent_create`) instead of opening a second one, held
    until it times out. A create sent again unchanged needs no lock (its session's id is its
    own: the second insert waits for the first's), but takes the same one. PostgreSQL only — an
    advisory lock held until the transaction ends; SQLite lets one writer in at a time anyway."""
    if dialect_name(session) == "postgresql":
        key = int.from_bytes(
            hashlib.sha256(f"nchf-create:{client}:{digests.resent}".encode()).digest()[:8], "big"
        )
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key - 2**63})


RESENT_LOOKED_AT = 100
"""A create retransmitted with a new time stamp is looked for among this many latest sessions
the client opened for the line."""
RESENT_WITHIN = timedelta(seconds=30)
"""…opened this recently: a network function retransmits within its response timer (seconds),
so an older session alike is another event's — an SMS of the same content a minute later whose
first transmission was lost must be charged, not answered with the first one's resource (the
sixteenth round's code review: before, any of the 100 latest, however old, answered it)."""


async def _resent_create(
    session: AsyncSession,
    line: Line,
    clients: Sequence[str],
    req: ChargingDataRequest,
    digests: Digests,
    now: datetime,
) -> ChargingSession | None:
    """The session a create sent again (`retransmissionIndicator: true`) with another
    `invocationTimeStamp` opened — or, for a create without the indicator, the session its
    retransmission opened when that arrived first — if it is one of the `RESENT_LOOKED_AT`
    latest the client opened for the line within `RESENT_WITHIN` (a create sent again unchanged
    is found by its id, however late). One query of a line's few latest sessions, by index."""
    stmt = (
        select(ChargingSession)
        .where(
            ChargingSession.line_id == line.id,
            ChargingSession.client.in_([c[:64] for c in clients]),
            ChargingSession.created_at >= now - RESENT_WITHIN,
        )
        .order_by(ChargingSession.created_at.desc())
        .limit(RESENT_LOOKED_AT)
    )
    key = str(req.invocationSequenceNumber)
    for cs in (await session.execute(stmt)).scalars():
        kept = cs.answers.get(key)
        if kept is not None and _answers_again(kept, "create", req, digests):
            return cs
    return None


def _deadline(settings: Settings, now: datetime) -> datetime:
    return now + timedelta(
        seconds=settings.charging_validity_seconds + settings.charging_session_grace_seconds
    )


def parse_ref(ref: str) -> uuid.UUID:
    try:
        return uuid.UUID(ref)
    except ValueError as exc:
        raise NchfProblem(
            404, "CONTEXT_NOT_FOUND", N_("No charging data resource {ref}."), ref=ref[:64]
        ) from exc


async def update_charging_data(
    session: AsyncSession,
    settings: Settings,
    table: RatingTable,
    *,
    client: str,
    ref: str,
    body: bytes,
    release: bool,
    now: datetime | None = None,
    client_aliases: Sequence[str] = (),
) -> NchfAnswer:
    """Nchf_ConvergedCharging_Update (200 and the new quotas) or _Release (204)."""
    now = now or utcnow()
    req = parse_request(body)
    if req.oneTimeEvent:
        # A one-time event is one create that closes its resource; on an open session it would
        # charge units outside its quotas and put the group's reservations out of reach.
        raise NchfProblem(
            400,
            "MANDATORY_IE_INCORRECT",
            N_("The charging request is not valid."),
            invalid=[("/oneTimeEvent", "a one-time event is a create, not an update or release")],
        )
    ref_id = parse_ref(ref)
    found = await ChargingSessions(session).lock(ref_id)
    if found is None or (
        found[0].client != client[:64] and found[0].client not in client_aliases
    ):  # another client's; or, stored before the client id was kept, a key of this client
        raise NchfProblem(404, "CONTEXT_NOT_FOUND", N_("No charging data resource {ref}."), ref=ref)
    cs, line = found
    check_identities(req, line)
    status = 204 if release else 200
    op = "release" if release else "update"
    seq = req.invocationSequenceNumber
    digests = _hash(body)
    kept = cs.answers.get(str(seq))
    if kept is not None:
        if _answers_again(kept, op, req, digests):
            return NchfAnswer(status, kept["body"], ref_id)
        raise NchfProblem(
            400,
            "CHARGING_FAILED",
            N_("invocationSequenceNumber {seq} was answered already, for another request."),
            invalid=[("/invocationSequenceNumber", "answered already for another request")],
            seq=seq,
        )
    if cs.state != SessionState.open.value:
        # Released (or timed out, or ended): the resource is gone (TS 32.291 5.2.2.4). A release
        # retransmitted got its answer above; another request, with a new number, is refused, so
        # that the network knows the units it reports were not charged (a 204 said they were).
        raise NchfProblem(
            404, "CONTEXT_NOT_FOUND", N_("The charging data resource {ref} is closed."), ref=ref
        )
    if seq <= cs.sequence:
        # Not after the last number, and no answer to it kept (a kept one was answered again
        # above): a number skipped then sent late, or a stray older than the answers kept — the
        # two cannot be told apart, as older answers are forgotten. Neither is charged.
        raise NchfProblem(
            400,
            "CHARGING_FAILED",
            N_(
                "invocationSequenceNumber {seq} is not after the last one, {last}, and no answer "
                "to it is kept: it is not answered."
            ),
            invalid=[("/invocationSequenceNumber", "not after the last one; no answer kept")],
            seq=seq,
            last=cs.sequence,
        )
    country, zone = cs.country, cs.zone
    located = location_country(req)
    if located and located != cs.country:
        country, zone = located, table.zone_of(located)
    work = Charging(session, settings, table, line, cs, seq, now)
    units = await _process(work, req, release=release, country=country, zone=zone)
    cs.country, cs.zone = country, zone
    answer = None if release else _response(req, now, units)
    cs.sequence = seq
    _remember(
        cs, seq, op, digests, answer,
        resent=req.invocationTimeStamp if req.retransmissionIndicator else None,
    )
    cs.updated_at = now
    if release:
        cs.state = SessionState.released.value
    else:
        cs.deadline = _deadline(settings, now)
    await work.finish(created=False)
    return NchfAnswer(status, answer, ref_id)


async def expire_abandoned_sessions(
    session: AsyncSession, settings: Settings, *, now: datetime | None = None, limit: int = 200
) -> int:
    """Release the reservations of open sessions past their deadline; returns how many.

    Locks as a live update does, in the ledger's one order: every line's pots first (one
    statement, by id), then — in one ledger batch for all the sessions — the operator accounts.
    Session by session (pots of one line, its operator account, the pots of the next) it held an
    operator account while waiting for a line a live update held while waiting for that
    account."""
    now = now or utcnow()
    stmt = (
        select(ChargingSession, Line)
        .join(Line, Line.id == ChargingSession.line_id)
        .where(ChargingSession.state == SessionState.open.value, ChargingSession.deadline <= now)
        .order_by(ChargingSession.deadline)
        .limit(limit)
        .with_for_update(of=sessions_table, skip_locked=True)
    )
    rows = list((await session.execute(stmt)).all())
    await _close_sessions(session, settings, rows, SessionState.timed_out, now)
    return len(rows)


async def end_sessions_of_lines(
    session: AsyncSession, settings: Settings, line_ids: Sequence[uuid.UUID], *, now: datetime
) -> int:
    """End the open sessions of lines being terminated (the caller holds the lines), releasing
    their reservations as a timed-out session's are; returns how many. Termination forfeits what
    a line holds: a reservation released after it would come back to the line's wallet.

    A session being updated at this moment is waited for; its update may wait for the line
    (its activity) in turn, as it may for the line's accounts that termination forfeits: a
    deadlock PostgreSQL breaks and `Database.run` retries. A line frozen this long has been
    granted nothing for days, so its sessions are nearly always abandoned ones."""
    if not line_ids:
        return 0
    stmt = (
        select(ChargingSession, Line)
        .join(Line, Line.id == ChargingSession.line_id)
        .where(
            ChargingSession.line_id.in_(list(line_ids)),
            ChargingSession.state == SessionState.open.value,
        )
        .order_by(ChargingSession.id)
        .with_for_update(of=sessions_table)
    )
    rows = list((await session.execute(stmt)).all())
    await _close_sessions(session, settings, rows, SessionState.ended, now)
    return len(rows)


async def _close_sessions(
    session: AsyncSession,
    settings: Settings,
    rows: Sequence[Any],
    state: SessionState,
    now: datetime,
) -> None:
    """Release the reservations of the (locked) sessions of `rows` (session, line) — nothing
    is posted: no usage was reported — and leave them in `state`."""
    if not rows:
        return
    pots = await lock_pots(session, sorted({line.id for _, line in rows}))
    empty = RatingTable()
    batch: list[NewTransfer] = []
    for cs, line in rows:
        work = Charging(session, settings, empty, line, cs, cs.sequence + 1, now)
        work.pots = pots[line.id]  # shared by the line's sessions: each sees what the last freed
        groups = {k: dict(v) for k, v in cs.groups.items()}
        for key, group in groups.items():
            if group.get("holds"):
                await work.report_used(int(key), group, 0, None)
        cs.groups = groups
        cs.state = state.value
        cs.updated_at = now
        batch += work.chain()  # each session's chain, as its own update would post it
    if batch:
        await _post(session, batch, now)
    await session.flush()
