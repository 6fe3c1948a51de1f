"""The operator's chart of accounts: the counterparties that make every transfer double-entry.

Each is named by a stable key and has an id derived from it, so code refers to them without a
lookup; `ensure_accounts` creates them the first time they are needed.

| key | unit | what its balance means |
|---|---|---|
| `clearing:<provider>:<CUR>` | currency | what a payment provider owes the operator (debit-normal) |
| `revenue:sales:<CUR>` | currency | plans sold |
| `revenue:fees:<CUR>` | currency | payment fees charged to customers |
| `revenue:usage:<CUR>` | currency | wallet money spent on usage |
| `funding:<CUR>` | currency | wallet credit issued to lines (by plans, gifts, adjustments) |
| `expiry:<unit>` | any | what expired unused |
| `issuance:<unit>` | units | minutes, bytes and messages issued to buckets |
| `consumption:<unit>` | units | units used on the network |
"""

from __future__ import annotations

import uuid

from simcharge.ledger.service import NewAccount, system_account, system_account_id


def clearing(provider: str, currency: str) -> NewAccount:
    return system_account(f"clearing:{provider}:{currency}", currency, "clearing")


def sales(currency: str) -> NewAccount:
    return system_account(f"revenue:sales:{currency}", currency, "revenue")


def fees(currency: str) -> NewAccount:
    return system_account(f"revenue:fees:{currency}", currency, "revenue")


def usage_revenue(currency: str) -> NewAccount:
    return system_account(f"revenue:usage:{currency}", currency, "revenue")


def funding(currency: str) -> NewAccount:
    return system_account(f"funding:{currency}", currency, "funding")


def expiry(unit: str) -> NewAccount:
    return system_account(f"expiry:{unit}", unit, "expiry")


def issuance(unit: str) -> NewAccount:
    return system_account(f"issuance:{unit}", unit, "issuance")


def consumption(unit: str) -> NewAccount:
    return system_account(f"consumption:{unit}", unit, "consumption")


def key_id(key: str) -> uuid.UUID:
    return system_account_id(key)
