"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from simcharge.accounts.models import Account
from simcharge.auth.models import ApiKey
from simcharge.catalog.models import PaymentMethod, Plan, PlanPrice, Zone
from simcharge.db import Base
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lines.models import Bucket, Line
from simcharge.worker.models import OutboxJob

__all__ = [
    "Account",
    "ApiKey",
    "Base",
    "Bucket",
    "LedgerAccount",
    "LedgerTransfer",
    "Line",
    "OutboxJob",
    "PaymentMethod",
    "Plan",
    "PlanPrice",
    "Zone",
]

metadata = Base.metadata
