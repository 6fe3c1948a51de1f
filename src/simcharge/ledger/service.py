"""Creating ledger accounts and transfers.

`create_transfers` follows TigerBeetle's semantics. The batch's accounts (and the pending
transfers it resolves) are locked in one query, every transfer is evaluated in order in memory,
and only then are the transfers that succeeded written. A rejected transfer, or every transfer
of a failed linked chain, therefore never reaches the database: nothing to undo, no trace.

Linked chains: a transfer with `linked=True` is linked to the next one in the batch; the chain
ends at the first transfer without the flag. The chain commits all or nothing. A transfer whose
id already exists with the same fields reports `exists` and changes nothing, so a retried batch
is harmless; with different fields it reports `exists_with_different_fields`.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import Database, RetryableError, dialect_name
from simcharge.errors import Conflict
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import derived_id, uuid7
from simcharge.kit.translations import N_
from simcharge.ledger.models import PendingStatus, TransferKind
from simcharge.ledger.repository import (
    ACCOUNT_FIELDS,
    FastTransfer,
    LedgerRepository,
    TransferRow,
    try_transfer_alone,
)

MAX_AMOUNT = 2**63 - 1
MAX_TIMEOUT_S = 2**32 - 1
"""The longest a pending transfer may wait for its timeout: TigerBeetle's (a u32 of seconds,
about 136 years). Longer is no reservation anyone means, and `now` plus it must stay a date."""


class TransferResult(StrEnum):
    ok = "ok"
    exists = "exists"
    """The same transfer (same id, same fields) was already created; nothing changed."""
    exists_with_different_fields = "exists_with_different_fields"
    linked_event_failed = "linked_event_failed"
    linked_event_chain_open = "linked_event_chain_open"
    id_must_not_be_zero = "id_must_not_be_zero"
    kind_not_allowed = "kind_not_allowed"
    amount_must_not_be_negative = "amount_must_not_be_negative"
    amount_must_not_be_zero = "amount_must_not_be_zero"
    amount_too_large = "amount_too_large"
    debit_account_id_required = "debit_account_id_required"
    credit_account_id_required = "credit_account_id_required"
    unit_required = "unit_required"
    accounts_must_be_different = "accounts_must_be_different"
    timeout_reserved_for_pending_transfer = "timeout_reserved_for_pending_transfer"
    timeout_must_not_be_negative = "timeout_must_not_be_negative"
    timeout_too_large = "timeout_too_large"
    """A pending timeout longer than `MAX_TIMEOUT_S`."""
    pending_id_must_be_zero = "pending_id_must_be_zero"
    pending_id_required = "pending_id_required"
    pending_id_must_be_different = "pending_id_must_be_different"
    debit_account_not_found = "debit_account_not_found"
    credit_account_not_found = "credit_account_not_found"
    accounts_must_have_the_same_unit = "accounts_must_have_the_same_unit"
    transfer_must_have_the_same_unit_as_accounts = "transfer_must_have_the_same_unit_as_accounts"
    overflow = "overflow"
    exceeds_credits = "exceeds_credits"
    """The debit account may not owe more than it holds (`debits_must_not_exceed_credits`)."""
    exceeds_debits = "exceeds_debits"
    """The credit account may not hold more than it is owed (`credits_must_not_exceed_debits`)."""
    pending_transfer_not_found = "pending_transfer_not_found"
    pending_transfer_not_pending = "pending_transfer_not_pending"
    pending_transfer_has_different_fields = "pending_transfer_has_different_fields"
    pending_transfer_already_posted = "pending_transfer_already_posted"
    pending_transfer_already_voided = "pending_transfer_already_voided"
    pending_transfer_expired = "pending_transfer_expired"
    pending_transfer_not_expired = "pending_transfer_not_expired"
    exceeds_pending_transfer_amount = "exceeds_pending_transfer_amount"


SUCCESS = frozenset({TransferResult.ok, TransferResult.exists})


@dataclass(frozen=True, slots=True)
class NewTransfer:
    """A transfer to create. For post/void, accounts, unit and amount default to the pending's."""

    id: uuid.UUID
    amount: int | None = None
    unit: str | None = None
    debit_account_id: uuid.UUID | None = None
    credit_account_id: uuid.UUID | None = None
    kind: TransferKind = TransferKind.posted
    pending_id: uuid.UUID | None = None
    timeout_s: int = 0
    """Pending only: seconds after which the sweep releases the reservation (0: never; at most
    `MAX_TIMEOUT_S`)."""
    code: str = "transfer"
    reference: str | None = None
    linked: bool = False


@dataclass(frozen=True, slots=True)
class TransferOutcome:
    id: uuid.UUID
    result: TransferResult

    @property
    def ok(self) -> bool:
        return self.result in SUCCESS


class TransferRejected(Conflict):
    slug = "transfer-rejected"
    title = N_("The ledger refused the transfer.")

    def __init__(self, outcomes: Sequence[TransferOutcome]) -> None:
        self.outcomes = list(outcomes)
        failures = [o for o in outcomes if not o.ok]
        # The transfer that failed on its own says why; the others only followed it.
        cause = next(
            (o for o in failures if o.result is not TransferResult.linked_event_failed),
            failures[0],
        )
        self.reason = cause.result
        super().__init__(
            N_("Transfer {transfer_id} was refused: {reason}."),
            transfer_id=str(cause.id),
            reason=cause.result.value,
        )

    def extra(self) -> dict[str, Any]:
        return {"results": [{"id": str(o.id), "result": o.result.value} for o in self.outcomes]}


class ConcurrentInsert(RetryableError):
    """Another transaction created one of the batch's ids between our read and our write."""


class PendingAlreadyResolved(RetryableError):
    """A pending transfer this batch resolves was resolved by another transaction between our
    read and our write (the row lock makes this a bug or a writer that bypassed the ledger;
    run again, the batch is then judged on the row as it now is)."""


class AccountExistsDifferently(Conflict):
    """`ensure_accounts` was asked for an account that exists otherwise (TigerBeetle's
    `exists_with_different_ledger`, `…_flags`, `…_code`): another unit, code, key, line or
    bound — or its key is another account's. Nothing is created; the caller's books and the
    ledger's disagree (a bug, or a chart changed under stored accounts)."""

    slug = "ledger-account-exists-differently"

    def __init__(
        self,
        account_id: uuid.UUID,
        key: str | None,
        *,
        fields: Sequence[str] = (),
        owner: uuid.UUID | None = None,
    ) -> None:
        self.account_id = account_id
        self.key = key
        self.fields = list(fields)
        self.owner = owner
        if self.fields:
            detail = "Ledger account {account_id} exists with another {fields}."
        else:
            detail = "The key {key} of ledger account {account_id} belongs to account {owner}."
        super().__init__(
            detail, account_id=str(account_id), key=key, fields=", ".join(self.fields),
            owner=str(owner),
        )


# ---------------------------------------------------------------------------------------------
# Accounts


@dataclass(frozen=True, slots=True)
class NewAccount:
    unit: str
    code: str
    id: uuid.UUID = field(default_factory=uuid7)
    key: str | None = None
    line_id: uuid.UUID | None = None
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False


def system_account_id(key: str) -> uuid.UUID:
    """The id of an operator account named `key`; the same everywhere, so no lookup is needed."""
    return derived_id("ledger-account", key)


@functools.lru_cache(maxsize=4096)
def system_account(key: str, unit: str, code: str) -> NewAccount:
    """An operator account (immutable, so kept: a top-up names nine, each id a SHA-1)."""
    return NewAccount(unit=unit, code=code, id=system_account_id(key), key=key)


def _account_row(a: NewAccount, now: datetime) -> dict[str, Any]:
    if a.debits_must_not_exceed_credits and a.credits_must_not_exceed_debits:
        raise ValueError("an account has at most one balance bound")
    return {
        "id": a.id,
        "unit": a.unit,
        "code": a.code,
        "key": a.key,
        "line_id": a.line_id,
        "debits_must_not_exceed_credits": a.debits_must_not_exceed_credits,
        "credits_must_not_exceed_debits": a.credits_must_not_exceed_debits,
        "debits_pending": 0,
        "debits_posted": 0,
        "credits_pending": 0,
        "credits_posted": 0,
        "created_at": now,
    }


async def create_accounts(session: AsyncSession, new: Iterable[NewAccount]) -> None:
    now = utcnow()
    await LedgerRepository(session).insert_accounts([_account_row(a, now) for a in new])


async def ensure_accounts(session: AsyncSession, new: Iterable[NewAccount]) -> None:
    """Create the accounts that do not exist yet (by id); leave the others as they are — if
    they are what was asked for (same unit, code, key, line and bounds). An account that exists
    otherwise, or whose key names another account, raises `AccountExistsDifferently`: the
    transfers the caller means to post would be refused far from the cause, or (a key that is
    another id's) find no account at all."""
    now = utcnow()
    wanted = [_account_row(a, now) for a in new]
    repository = LedgerRepository(session)
    suspect = await repository.insert_accounts_if_absent(wanted)
    if suspect:
        await _check_existing(repository, [row for row in wanted if row["id"] in suspect])


async def _check_existing(repository: LedgerRepository, wanted: Sequence[dict[str, Any]]) -> None:
    """Raise `AccountExistsDifferently` unless every account asked for exists as asked."""
    found = await repository.get_accounts({row["id"] for row in wanted})
    for row in wanted:
        existing = found.get(row["id"])
        if existing is None:
            # Not made, and not there: its key is another account's.
            owners = await repository.account_ids_by_key([row["key"]] if row["key"] else [])
            raise AccountExistsDifferently(
                row["id"], row["key"], owner=owners.get(row["key"]) if row["key"] else None
            )
        differs = [
            name for name in ACCOUNT_FIELDS if existing._mapping[name] != row[name]
        ]
        if differs:
            raise AccountExistsDifferently(row["id"], row["key"], fields=differs)


# ---------------------------------------------------------------------------------------------
# Transfers: static checks (no I/O)

_KINDS_WITH_ACCOUNTS = (TransferKind.posted, TransferKind.pending)
_RESOLVING_KINDS = (
    TransferKind.post_pending,
    TransferKind.void_pending,
    TransferKind.expire_pending,
)


def _static_result(t: NewTransfer, internal: bool) -> TransferResult | None:
    r = TransferResult
    if t.id.int == 0:
        return r.id_must_not_be_zero
    if t.kind is TransferKind.expire_pending and not internal:
        return r.kind_not_allowed
    if t.amount is not None:
        if t.amount < 0:
            return r.amount_must_not_be_negative
        if t.amount > MAX_AMOUNT:
            return r.amount_too_large
    if t.timeout_s < 0:
        return r.timeout_must_not_be_negative
    if t.timeout_s > MAX_TIMEOUT_S:
        return r.timeout_too_large
    if t.kind in _KINDS_WITH_ACCOUNTS:
        if not t.amount:
            return r.amount_must_not_be_zero
        if t.debit_account_id is None:
            return r.debit_account_id_required
        if t.credit_account_id is None:
            return r.credit_account_id_required
        if not t.unit:
            return r.unit_required
        if t.debit_account_id == t.credit_account_id:
            return r.accounts_must_be_different
        if t.pending_id is not None:
            return r.pending_id_must_be_zero
        if t.timeout_s and t.kind is not TransferKind.pending:
            return r.timeout_reserved_for_pending_transfer
        return None
    if t.pending_id is None:
        return r.pending_id_required
    if t.pending_id == t.id:
        return r.pending_id_must_be_different
    if t.timeout_s:
        return r.timeout_reserved_for_pending_transfer
    if (
        t.debit_account_id is not None
        and t.credit_account_id is not None
        and t.debit_account_id == t.credit_account_id
    ):
        return r.accounts_must_be_different
    return None


# ---------------------------------------------------------------------------------------------
# Transfers: evaluation in memory


class _Account:
    __slots__ = ("cmned", "dmnec", "totals", "unit")

    def __init__(self, row: Sequence[Any]) -> None:
        """`row`: the account's `LOCKED_COLUMNS` (`LedgerRepository.lock_batch`)."""
        _, unit, dmnec, cmned, *totals = row
        self.unit: str = unit
        self.dmnec: bool = bool(dmnec)
        self.cmned: bool = bool(cmned)
        # debits_pending, debits_posted, credits_pending, credits_posted
        self.totals: list[int] = totals


DP, DPO, CP, CPO = 0, 1, 2, 3


def _transfer_matches(t: NewTransfer, row: TransferRow) -> bool:
    """Does a request name the same transfer as the stored one? Omitted fields are not compared."""
    if t.kind.value != row["kind"] or t.code != row["code"] or t.reference != row["reference"]:
        return False
    if t.pending_id != row["pending_id"]:
        return False
    for name in ("amount", "unit", "debit_account_id", "credit_account_id"):
        wanted = getattr(t, name)
        if wanted is not None and wanted != row[name]:
            return False
    timeout_at, created_at = row["timeout_at"], row["created_at"]
    stored_timeout = round((timeout_at - created_at).total_seconds()) if timeout_at else 0
    return t.timeout_s == stored_timeout


@dataclass
class _Evaluation:
    now: datetime
    accounts: dict[uuid.UUID, _Account]
    pending: dict[uuid.UUID, TransferRow]
    existing: dict[uuid.UUID, TransferRow]
    rows: dict[uuid.UUID, TransferRow] = field(default_factory=dict)
    status: dict[uuid.UUID, PendingStatus] = field(default_factory=dict)
    touched: set[uuid.UUID] = field(default_factory=set)
    # Undo log of the chain being evaluated.
    _undo_totals: list[tuple[_Account, list[int]]] = field(default_factory=list)
    _undo_status: list[tuple[uuid.UUID, PendingStatus | None]] = field(default_factory=list)
    _chain_rows: list[uuid.UUID] = field(default_factory=list)

    def begin_chain(self) -> None:
        self._undo_totals.clear()
        self._undo_status.clear()
        self._chain_rows.clear()

    def abort_chain(self) -> None:
        for account, old in reversed(self._undo_totals):
            account.totals = old
        for tid, old_status in reversed(self._undo_status):
            if old_status is None:
                self.status.pop(tid, None)
            else:
                self.status[tid] = old_status
        for tid in self._chain_rows:
            self.rows.pop(tid, None)

    def _save(self, account: _Account) -> None:
        self._undo_totals.append((account, list(account.totals)))

    def _set_status(self, tid: uuid.UUID, status: PendingStatus) -> None:
        self._undo_status.append((tid, self.status.get(tid)))
        self.status[tid] = status

    def pending_status(self, tid: uuid.UUID, row: TransferRow) -> PendingStatus:
        return self.status.get(tid) or PendingStatus(row["pending_status"])

    def evaluate(self, t: NewTransfer) -> TransferResult:
        known = self.rows.get(t.id) or self.existing.get(t.id)
        if known is not None:
            return (
                TransferResult.exists
                if _transfer_matches(t, known)
                else TransferResult.exists_with_different_fields
            )
        if t.kind in _KINDS_WITH_ACCOUNTS:
            return self._move(t)
        return self._resolve(t)

    def _move(self, t: NewTransfer) -> TransferResult:
        assert t.debit_account_id is not None
        assert t.credit_account_id is not None
        assert t.amount
        assert t.unit
        debit = self.accounts.get(t.debit_account_id)
        credit = self.accounts.get(t.credit_account_id)
        if debit is None:
            return TransferResult.debit_account_not_found
        if credit is None:
            return TransferResult.credit_account_not_found
        if debit.unit != credit.unit:
            return TransferResult.accounts_must_have_the_same_unit
        if t.unit != debit.unit:
            return TransferResult.transfer_must_have_the_same_unit_as_accounts
        d_slot, c_slot = (DP, CP) if t.kind is TransferKind.pending else (DPO, CPO)
        amount = t.amount
        if (
            debit.totals[d_slot] + amount > MAX_AMOUNT
            or credit.totals[c_slot] + amount > MAX_AMOUNT
            or debit.totals[DP] + debit.totals[DPO] + amount > MAX_AMOUNT
            or credit.totals[CP] + credit.totals[CPO] + amount > MAX_AMOUNT
        ):
            return TransferResult.overflow
        d, c = debit.totals, credit.totals
        if debit.dmnec and d[DP] + d[DPO] + amount > d[CPO]:
            return TransferResult.exceeds_credits
        if credit.cmned and c[CP] + c[CPO] + amount > c[DPO]:
            return TransferResult.exceeds_debits
        self._save(debit)
        self._save(credit)
        debit.totals[d_slot] += amount
        credit.totals[c_slot] += amount
        self.touched.update((t.debit_account_id, t.credit_account_id))
        self.rows[t.id] = _moved_row(t, self.now)
        self._chain_rows.append(t.id)
        return TransferResult.ok

    def _resolve(self, t: NewTransfer) -> TransferResult:
        assert t.pending_id is not None
        p = self.rows.get(t.pending_id) or self.pending.get(t.pending_id)
        if p is None:
            return TransferResult.pending_transfer_not_found
        if p["kind"] != TransferKind.pending.value:
            return TransferResult.pending_transfer_not_pending
        status = self.pending_status(t.pending_id, p)
        if status is PendingStatus.posted:
            return TransferResult.pending_transfer_already_posted
        if status is PendingStatus.voided:
            return TransferResult.pending_transfer_already_voided
        if status is PendingStatus.expired:
            return TransferResult.pending_transfer_expired
        timeout_at: datetime | None = p["timeout_at"]
        timed_out = timeout_at is not None and timeout_at <= self.now
        if t.kind is TransferKind.expire_pending:
            if not timed_out:
                return TransferResult.pending_transfer_not_expired
        elif timed_out:
            return TransferResult.pending_transfer_expired
        debit_id: uuid.UUID = p["debit_account_id"]
        credit_id: uuid.UUID = p["credit_account_id"]
        unit: str = p["unit"]
        if (
            (t.debit_account_id is not None and t.debit_account_id != debit_id)
            or (t.credit_account_id is not None and t.credit_account_id != credit_id)
            or (t.unit is not None and t.unit != unit)
        ):
            return TransferResult.pending_transfer_has_different_fields
        reserved: int = p["amount"]
        if t.kind is TransferKind.post_pending:
            amount = reserved if t.amount is None else t.amount
            if amount > reserved:
                return TransferResult.exceeds_pending_transfer_amount
        else:
            if t.amount is not None and t.amount != reserved:
                return TransferResult.pending_transfer_has_different_fields
            amount = reserved
        # Resolving never raises what an account owes or holds (amount <= reserved), so no
        # balance bound can be crossed here.
        debit, credit = self.accounts[debit_id], self.accounts[credit_id]
        self._save(debit)
        self._save(credit)
        debit.totals[DP] -= reserved
        credit.totals[CP] -= reserved
        if t.kind is TransferKind.post_pending:
            debit.totals[DPO] += amount
            credit.totals[CPO] += amount
        self.touched.update((debit_id, credit_id))
        new_status = {
            TransferKind.post_pending: PendingStatus.posted,
            TransferKind.void_pending: PendingStatus.voided,
            TransferKind.expire_pending: PendingStatus.expired,
        }[t.kind]
        self._set_status(t.pending_id, new_status)
        self._add_row(
            t,
            {
                "debit_account_id": debit_id,
                "credit_account_id": credit_id,
                "amount": amount,
                "unit": unit,
                "pending_id": t.pending_id,
            },
        )
        return TransferResult.ok

    def _add_row(self, t: NewTransfer, values: dict[str, Any]) -> None:
        self.rows[t.id] = _transfer_row(t, self.now, values)
        self._chain_rows.append(t.id)


def _transfer_row(t: NewTransfer, now: datetime, values: dict[str, Any]) -> TransferRow:
    return {
        "id": t.id,
        "kind": t.kind.value,
        "code": t.code,
        "reference": t.reference,
        "created_at": now,
        "pending_id": None,
        "pending_status": None,
        "timeout_at": None,
        **values,
    }


def _moved_row(t: NewTransfer, now: datetime) -> TransferRow:
    """The row of a posted or pending transfer."""
    pending = t.kind is TransferKind.pending
    return _transfer_row(
        t,
        now,
        {
            "debit_account_id": t.debit_account_id,
            "credit_account_id": t.credit_account_id,
            "amount": t.amount,
            "unit": t.unit,
            "pending_status": PendingStatus.pending.value if pending else None,
            "timeout_at": now + timedelta(seconds=t.timeout_s) if t.timeout_s else None,
        },
    )


def _fast_params(batch: Sequence[NewTransfer], now: datetime) -> FastTransfer | None:
    """The parameters of the one-statement path for a batch it can take — a single posted or
    pending transfer, valid on its face — or None. Built straight from the request: this runs
    for most transfers, and every microsecond of Python here is one the database waits for."""
    if len(batch) != 1:
        return None
    t = batch[0]
    if t.linked or t.kind not in _KINDS_WITH_ACCOUNTS or _static_result(t, False) is not None:
        return None
    pending = t.kind is TransferKind.pending
    return (
        t.debit_account_id,
        t.credit_account_id,
        t.amount if pending else 0,
        0 if pending else t.amount,
        t.unit,
        t.id,
        t.amount,
        t.kind.value,
        PendingStatus.pending.value if pending else None,
        now + timedelta(seconds=t.timeout_s) if t.timeout_s else None,
        t.code,
        t.reference,
        now,
    )


async def _try_in_one_statement(
    repo: LedgerRepository, batch: Sequence[NewTransfer], now: datetime
) -> list[TransferOutcome] | None:
    """PostgreSQL's fast path for a lone posted or pending transfer. None: not taken, or the
    transfer was refused or replayed — the general path then tells exactly why."""
    params = _fast_params(batch, now)
    if params is None:
        return None
    updated, inserted = await repo.try_transfer(params)
    if inserted:
        return [TransferOutcome(batch[0].id, TransferResult.ok)]
    if updated:
        await repo.undo_try_transfer(params, updated)
    return None


def _chains(batch: Sequence[NewTransfer]) -> list[range]:
    spans, start = [], 0
    for i, t in enumerate(batch):
        if not t.linked:
            spans.append(range(start, i + 1))
            start = i + 1
    if start < len(batch):
        spans.append(range(start, len(batch)))
    return spans


def _evaluate_batch(
    batch: Sequence[NewTransfer], ev: _Evaluation, internal: bool
) -> list[TransferResult]:
    results: list[TransferResult] = [TransferResult.ok] * len(batch)
    for span in _chains(batch):
        ev.begin_chain()
        open_chain = batch[span[-1]].linked
        failed_at: int | None = None
        for i in span:
            result = _static_result(batch[i], internal) or ev.evaluate(batch[i])
            results[i] = result
            if result not in SUCCESS:
                failed_at = i
                break
        if open_chain and failed_at is None:
            failed_at = span[-1]
            results[failed_at] = TransferResult.linked_event_chain_open
        if failed_at is not None:
            ev.abort_chain()
            for i in span:
                if i != failed_at:
                    results[i] = TransferResult.linked_event_failed
    return results


async def create_transfers(
    session: AsyncSession,
    batch: Sequence[NewTransfer],
    *,
    now: datetime | None = None,
    _internal: bool = False,
) -> list[TransferOutcome]:
    """Create a batch of transfers; one outcome per transfer, in order. Never raises for a
    refused transfer: look at the outcomes (or use `post_transfers`, which raises)."""
    if not batch:
        return []
    now = now or utcnow()
    repo = LedgerRepository(session)
    if dialect_name(session) == "postgresql" and not _internal:
        done = await _try_in_one_statement(repo, batch, now)
        if done is not None:
            return done
    pending_ids = {t.pending_id for t in batch if t.pending_id is not None}
    account_ids: set[uuid.UUID] = set()
    for t in batch:
        account_ids.update(a for a in (t.debit_account_id, t.credit_account_id) if a is not None)
    pending, locked = await repo.lock_batch(pending_ids, account_ids)

    # First assume that no id of the batch exists yet (the common case, one query saved). If
    # that turns out wrong — a refusal that may be a replay, or an insert that hit an existing
    # id — look the ids up and evaluate again; the accounts stay locked by us meanwhile.
    existing: dict[uuid.UUID, TransferRow] | None = None
    while True:
        ev = _Evaluation(
            now=now,
            accounts={k: _Account(v) for k, v in locked.items()},
            pending=pending,
            existing=existing or {},
        )
        results = _evaluate_batch(batch, ev, _internal)
        if existing is None and any(r not in SUCCESS for r in results):
            existing = await repo.get_transfers({t.id for t in batch})
            if existing:
                continue
        inserted, resolved = await repo.write_batch(
            list(ev.rows.values()),
            [(aid, tuple(ev.accounts[aid].totals)) for aid in sorted(ev.touched)],
            ev.status,
        )
        if inserted == set(ev.rows):
            break
        # Nothing but these rows was written: take them back and look at what exists.
        await repo.delete_transfers(inserted)
        if existing is not None:
            raise ConcurrentInsert(sorted(set(ev.rows) - inserted))
        existing = await repo.get_transfers({t.id for t in batch})
    if resolved != set(ev.status):
        raise PendingAlreadyResolved(sorted(set(ev.status) - resolved))
    return [TransferOutcome(t.id, r) for t, r in zip(batch, results, strict=True)]


async def commit_transfers(
    db: Database, batch: Sequence[NewTransfer], *, now: datetime | None = None
) -> list[TransferOutcome]:
    """`create_transfers` in a transaction of its own, committed before it returns: the ledger
    used on its own, with nothing else to write in the same transaction. On PostgreSQL a lone
    posted or pending transfer is one statement committed by itself: one round trip, against
    three for the same statement in a transaction (BEGIN, it, COMMIT), and no session. Anything
    else, or a transfer that statement did not write (refused, or its id exists, or the
    statement failed), goes through `create_transfers` in `db.run`, which answers exactly why,
    retrying as usual."""
    if not batch:
        return []
    now = now or utcnow()
    params = _fast_params(batch, now) if db.dialect == "postgresql" else None
    if params is not None:
        with contextlib.suppress(asyncpg.PostgresError):
            async with db.autocommit_driver() as driver:
                if driver is not None and await try_transfer_alone(driver, params):
                    return [TransferOutcome(batch[0].id, TransferResult.ok)]
    return await db.run(lambda s: create_transfers(s, batch, now=now))


async def post_transfers(
    session: AsyncSession, batch: Sequence[NewTransfer], *, now: datetime | None = None
) -> list[TransferOutcome]:
    """Create the batch as one linked chain: all of it, or nothing and `TransferRejected`."""
    last = len(batch) - 1
    chained = [replace(t, linked=i < last) for i, t in enumerate(batch)]
    outcomes = await create_transfers(session, chained, now=now)
    if not all(o.ok for o in outcomes):
        raise TransferRejected(outcomes)
    return outcomes


async def expire_pending_transfers(
    session: AsyncSession, *, now: datetime | None = None, limit: int = 500
) -> int:
    """Release reservations whose timeout has passed; returns how many were released."""
    now = now or utcnow()
    due = await LedgerRepository(session).due_pending_ids(now, limit)
    return await release_timed_out(session, due, now=now)


async def lock_expirable_holds(
    session: AsyncSession, line_ids: Sequence[uuid.UUID]
) -> list[uuid.UUID]:
    """Lock the reservations on these lines' accounts that the timeout sweep may release (still
    pending, with a timeout), in id order, and return their ids. The sweep, like every ledger
    batch, locks a reservation before its accounts; a caller that will lock the lines' accounts
    itself (`charging.consumption.lock_pots`) and then resolve these reservations calls this
    first, so that it and the sweep wait for each other in that one order, never crosswise."""
    return await LedgerRepository(session).lock_expirable_holds_of_lines(line_ids)


async def release_timed_out(
    session: AsyncSession, pending_ids: Sequence[uuid.UUID], *, now: datetime
) -> int:
    """Release these reservations, whose timeout has passed, as the ledger's own job does (the
    same transfer ids: whichever comes second changes nothing); returns how many were
    released."""
    due = pending_ids
    batch = [
        NewTransfer(
            id=derived_id("expire", pid),
            kind=TransferKind.expire_pending,
            pending_id=pid,
            code="timeout",
            reference=str(pid),
        )
        for pid in due
    ]
    outcomes = await create_transfers(session, batch, now=now, _internal=True)
    return sum(1 for o in outcomes if o.result is TransferResult.ok)
