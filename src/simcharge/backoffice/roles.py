"""What each staff role may do, and which API-key scope grants the same.

The table is the README's ("Back office"); a test checks each role is refused the rest."""

from __future__ import annotations

from enum import StrEnum

from simcharge.backoffice.models import Role


class Permission(StrEnum):
    customers_read = "customers.read"
    """Search customers and see a customer's full view."""
    tickets_work = "tickets.work"
    """Read, reply to, assign and set the status and priority of tickets."""
    orders_check = "orders.check"
    """Ask the provider again where a payment stands."""
    receipts_resend = "receipts.resend"
    accounts_unlock = "accounts.unlock"
    lines_unfreeze = "lines.unfreeze"
    adjustments_request = "adjustments.request"
    """Adjust a wallet or bucket; above the threshold it waits for approval."""
    adjustments_approve = "adjustments.approve"
    """Approve or reject someone else's adjustment."""
    refunds_create = "refunds.create"
    attention_read = "attention.read"
    """See payments needing attention."""
    attention_resolve = "attention.resolve"
    unmatched_read = "unmatched.read"
    """See the payment notifications that matched no order (`/backoffice/attention/unmatched`,
    `GET /admin/provider-events`): finance's, as the books; never an agent's. Settling one is
    `attention.resolve`."""
    reports_read = "reports.read"
    ledger_read = "ledger.read"
    """Read the ledger's trial balance (`GET /admin/reports/trial-balance`)."""
    catalog_read = "catalog.read"
    """Read the catalog through the API (`GET /admin/catalog`, a tariff's versions)."""
    catalog_edit = "catalog.edit"
    audit_read = "audit.read"
    staff_manage = "staff.manage"
    jobs_read = "jobs.read"
    """See the outbox: jobs waiting, retrying, dead."""
    jobs_manage = "jobs.manage"
    """Retry or discard a dead job."""
    apikeys_manage = "apikeys.manage"
    """See the API keys (never a secret); create, rotate and revoke them. A person only: no
    scope grants it, so no key manages keys."""


P = Permission
_EVERYONE = {
    P.customers_read,
    P.tickets_work,
    P.orders_check,
    P.receipts_resend,
    P.adjustments_request,
    P.attention_read,
    P.jobs_read,
}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.agent: frozenset(_EVERYONE | {P.accounts_unlock, P.lines_unfreeze}),
    Role.finance: frozenset(
        _EVERYONE
        | {P.adjustments_approve, P.refunds_create, P.attention_resolve, P.reports_read}
        | {P.ledger_read, P.unmatched_read}
    ),
    Role.admin: frozenset(Permission),
}

SCOPE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    # A tool reconciling orders with the provider's settlements also needs the payments that
    # matched no order (money taken, no order to show it): they are the difference.
    "orders:read": frozenset({P.customers_read, P.attention_read, P.unmatched_read}),
    "refunds:write": frozenset({P.refunds_create}),
    "customers:read": frozenset({P.customers_read, P.attention_read}),
    "tickets:write": frozenset({P.tickets_work}),
    "accounts:write": frozenset(
        {P.accounts_unlock, P.lines_unfreeze, P.receipts_resend, P.orders_check}
    ),
    "adjustments:write": frozenset({P.adjustments_request}),
    "reports:read": frozenset({P.reports_read, P.ledger_read, P.unmatched_read}),
    "ledger:read": frozenset({P.ledger_read}),
    "catalog:read": frozenset({P.catalog_read}),
    "catalog:write": frozenset({P.catalog_edit, P.catalog_read}),
    "jobs:read": frozenset({P.jobs_read}),
    "jobs:write": frozenset({P.jobs_manage}),
}
"""An API key acts for a tool, not a person: it can never approve an adjustment (four-eyes needs
two people), manage staff or API keys, or read the audit log."""


def permissions_of(role: str) -> frozenset[Permission]:
    return ROLE_PERMISSIONS.get(Role(role), frozenset())


def permissions_of_scopes(scopes: frozenset[str] | list[str]) -> frozenset[Permission]:
    found: set[Permission] = set()
    for scope in scopes:
        found |= SCOPE_PERMISSIONS.get(scope, frozenset())
    return frozenset(found)
