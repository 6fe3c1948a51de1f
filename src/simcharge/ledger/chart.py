"""The operator's chart of accounts: the counterparties that make every transfer double-entry.

Each is named by a stable key and has an id derived from it, so code refers to them without a
lookup; `ensure_accounts` creates them the first time they are needed.

| key | unit | what its balance means |
|---|---|---|
| `clearing:<provider>:<CUR>` | currency | what a payment provider owes the operator (debit-normal) |
| `unapplied:<CUR>` | currency | payments taken but not credited (a wrong amount…): held until refunded |
| `revenue:sales:<CUR>` | currency | plans sold |
| `revenue:fees:<CUR>` | currency | payment fees charged to customers |
| `revenue:usage:<CUR>` | currency | wallet money spent on usage |
| `funding:<CUR>` | currency | wallet credit issued to lines (by plans, gifts, adjustments) |
| `channel:<client>:<CUR>` | currency | what a TMF654 client (shop, partner) owes for credit sold |
| `loss:disputes:<CUR>` | currency | disputes lost beyond what was left to refund (debit-normal) |
| `expiry:<unit>` | any | what expired unused |
| `issuance:<unit>` | units | minutes, bytes and messages issued to buckets |
| `consumption:<unit>` | units | units used on the network |

Hot accounts are sharded. Every top-up credits the same revenue account and debits the same
issuance accounts; a row that every transaction updates makes them wait for each other's
commits. So each operator account exists in `SHARDS` copies — `revenue:sales:USD` (shard 0,
the one created by `catalog load`) and `revenue:sales:USD#1` … `#15` — and a transaction
picks one by what it is about (`shard_of(order.id)`). The account's balance is the sum of its
shards (`keys`); each shard on its own means nothing.
"""

from __future__ import annotations

import uuid

from simcharge.ledger.service import NewAccount, system_account, system_account_id

SHARDS = 16


def shard_of(subject: uuid.UUID) -> int:
    """The shard a transaction about `subject` (an order, a line) uses: spread evenly."""
    return subject.int % SHARDS


def sharded(key: str, shard: int) -> str:
    if not 0 <= shard < SHARDS:
        raise ValueError(f"shard {shard} out of range")
    return f"{key}#{shard}" if shard else key


def keys(key: str) -> list[str]:
    """Every shard's key of an operator account: sum their balances for the account's."""
    return [sharded(key, i) for i in range(SHARDS)]


def _account(key: str, unit: str, code: str, shard: int) -> NewAccount:
    return system_account(sharded(key, shard), unit, code)


def clearing(provider: str, currency: str, shard: int = 0) -> NewAccount:
    return _account(f"clearing:{provider}:{currency}", currency, "clearing", shard)


def unapplied(currency: str, shard: int = 0) -> NewAccount:
    return _account(f"unapplied:{currency}", currency, "unapplied", shard)


def sales(currency: str, shard: int = 0) -> NewAccount:
    return _account(f"revenue:sales:{currency}", currency, "revenue", shard)


def fees(currency: str, shard: int = 0) -> NewAccount:
    return _account(f"revenue:fees:{currency}", currency, "revenue", shard)


def usage_revenue(currency: str, shard: int = 0) -> NewAccount:
    return _account(f"revenue:usage:{currency}", currency, "revenue", shard)


def funding(currency: str, shard: int = 0) -> NewAccount:
    return _account(f"funding:{currency}", currency, "funding", shard)


def channel(client: str, currency: str, shard: int = 0) -> NewAccount:
    """The receivable from a sales channel that sells wallet credit through TMF654
    (`topupBalance`): debited by each top-up it makes, what the partner collected (cash at a
    shop…) and owes the operator. `client`: the API key's client id (its rotations share it)."""
    return _account(f"channel:{client}:{currency}", currency, "channel", shard)


def dispute_losses(currency: str, shard: int = 0) -> NewAccount:
    """What the operator lost to disputes decided for the payer after it had refunded them."""
    return _account(f"loss:disputes:{currency}", currency, "loss", shard)


def expiry(unit: str, shard: int = 0) -> NewAccount:
    return _account(f"expiry:{unit}", unit, "expiry", shard)


def issuance(unit: str, shard: int = 0) -> NewAccount:
    return _account(f"issuance:{unit}", unit, "issuance", shard)


def consumption(unit: str, shard: int = 0) -> NewAccount:
    return _account(f"consumption:{unit}", unit, "consumption", shard)


def key_id(key: str) -> uuid.UUID:
    return system_account_id(key)
