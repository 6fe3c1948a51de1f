"""Every table, imported in one place so Alembic and the tests see the whole schema."""

import simcharge.accounts.retention  # noqa: F401 - the retention sweep's indexes
from simcharge.accounts.models import Account
from simcharge.auth.models import (
    ApiKey,
    AuthSession,
    KnownDevice,
    LoginThrottle,
    RecoveryCode,
    SecurityEvent,
    VerificationCode,
)
from simcharge.backoffice.models import Adjustment, AuditEntry, StaffSession, StaffUser
from simcharge.catalog.models import PaymentMethod, Plan, PlanPrice, Zone
from simcharge.charging.models import ChargingSession, Tariff, UsageRecord
from simcharge.db import Base
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lifecycle.models import LifecycleMark, LineEvent
from simcharge.lines.models import Bucket, Line
from simcharge.notifications.models import MessageLog, Notice
from simcharge.orders.models import (
    CreditNoteDocument,
    IdempotencyKey,
    Order,
    Payment,
    ProviderEvent,
    ReceiptCounter,
    ReceiptDocument,
    Refund,
    SandboxPayment,
)
from simcharge.tickets.models import Ticket, TicketMessage
from simcharge.tmf654.models import BalanceAction
from simcharge.worker.models import OutboxJob

__all__ = [
    "Account",
    "Adjustment",
    "ApiKey",
    "AuditEntry",
    "AuthSession",
    "BalanceAction",
    "Base",
    "Bucket",
    "ChargingSession",
    "CreditNoteDocument",
    "IdempotencyKey",
    "KnownDevice",
    "LedgerAccount",
    "LedgerTransfer",
    "LifecycleMark",
    "Line",
    "LineEvent",
    "LoginThrottle",
    "MessageLog",
    "Notice",
    "Order",
    "OutboxJob",
    "Payment",
    "PaymentMethod",
    "Plan",
    "PlanPrice",
    "ProviderEvent",
    "ReceiptCounter",
    "ReceiptDocument",
    "RecoveryCode",
    "Refund",
    "SandboxPayment",
    "SecurityEvent",
    "StaffSession",
    "StaffUser",
    "Tariff",
    "Ticket",
    "TicketMessage",
    "UsageRecord",
    "VerificationCode",
    "Zone",
]

metadata = Base.metadata
