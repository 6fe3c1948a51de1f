"""Codes named in the staff member's language: the one place a back-office page turns a state,
a role, a kind or a unit into words (`state_word(kind, code)` in the templates), and what a
form's answer says happened (`done_message`: `?done=<code>` after a Post/Redirect/Get).

A code no table knows is shown as it is (a state added later is still readable); a `done` code no
table knows is the plain "Done." — the query string is never echoed into the page."""

from __future__ import annotations

import re

from babel import Locale, UnknownLocaleError

from simcharge.kit.i18n import BABEL_LOCALES
from simcharge.kit.translations import N_, translate
from simcharge.portal.security import EVENT_LABELS

WORDS: dict[str, dict[str, str]] = {
    "order": {
        "pending": N_("waiting for payment"),
        "paid": N_("paid, not credited"),
        "fulfilled": N_("paid and credited"),
        "failed": N_("payment failed"),
        "cancelled": N_("cancelled"),
        "expired": N_("expired unpaid"),
        "refunded": N_("refunded"),
        "partially_refunded": N_("partly refunded"),
    },
    "attention": {
        "amount_mismatch": N_("other amount paid"),
        "late_success": N_("paid late"),
        "line_unavailable": N_("line unavailable"),
        "refund_failed": N_("refund refused"),
        "provider_refund": N_("refunded at the provider"),
        "chargeback": N_("disputed by the payer"),
        "merchant_mismatch": N_("another merchant"),
        "stuck_pending": N_("pending too long"),
        "refund_pending": N_("refund still pending"),
    },
    # What we hold of a payment, and what a provider reports of one (`PaymentState`).
    "payment": {
        "pending": N_("pending"),
        "succeeded": N_("paid"),
        "failed": N_("declined"),
        "cancelled": N_("cancelled"),
        "expired": N_("expired unpaid"),
        "refunded": N_("refunded"),
        "partially_refunded": N_("partly refunded"),
    },
    "refund": {
        "pending": N_("waiting on the provider"),
        "succeeded": N_("refunded"),
        "failed": N_("refused by the provider"),
    },
    # What applying a provider's report did (`orders.fulfilment.Outcome`).
    "outcome": {
        "fulfilled": N_("credited the order"),
        "already": N_("already settled: nothing done"),
        "flagged": N_("flagged for attention"),
        "closed": N_("closed the order"),
        "unchanged": N_("nothing new"),
        "failed": N_("provider not reached"),
    },
    "line": {
        "available": N_("not yet active"),
        "active": N_("active"),
        "grace": N_("validity ended (grace)"),
        "frozen": N_("frozen"),
        "suspended": N_("suspended (lost or stolen)"),
        "terminated": N_("closed for good"),
    },
    "account": {
        "active": N_("active"),
        "locked": N_("locked"),
        "disabled": N_("disabled"),
        "closed": N_("closed by its holder"),
    },
    "adjustment": {
        "awaiting_approval": N_("awaiting approval"),
        "applied": N_("applied"),
        "rejected": N_("rejected"),
    },
    "ticket": {
        "open": N_("open"),
        "waiting_on_customer": N_("waiting on customer"),
        "resolved": N_("resolved"),
        "closed": N_("closed"),
    },
    "priority": {
        "low": N_("low"),
        "normal": N_("normal"),
        "high": N_("high"),
        "urgent": N_("urgent"),
    },
    "role": {"agent": N_("agent"), "finance": N_("finance"), "admin": N_("admin")},
    # What each permission allows (`roles.Permission`), for a refusal: "… does not allow this:
    # refunding an order".
    "permission": {
        "customers.read": N_("seeing customers and their orders"),
        "tickets.work": N_("working on tickets"),
        "orders.check": N_("checking a payment with its provider"),
        "receipts.resend": N_("resending a receipt"),
        "accounts.unlock": N_("unlocking an account"),
        "lines.unfreeze": N_("unfreezing a line"),
        "adjustments.request": N_("adjusting a line's balance"),
        "adjustments.approve": N_("approving or rejecting an adjustment"),
        "refunds.create": N_("refunding an order, or putting a payment on the line's balance"),
        "attention.read": N_("seeing payments needing attention"),
        "attention.resolve": N_("marking a payment needing attention as resolved"),
        "unmatched.read": N_("seeing payments matching no order"),
        "reports.read": N_("reading reports"),
        "ledger.read": N_("reading the ledger's trial balance"),
        "catalog.read": N_("reading the catalog"),
        "catalog.edit": N_("editing the catalog"),
        "audit.read": N_("reading the audit log"),
        "staff.manage": N_("managing staff"),
        "jobs.read": N_("seeing background jobs"),
        "jobs.manage": N_("retrying or discarding a background job"),
        "apikeys.manage": N_("managing API keys"),
    },
    "transfer": {
        "posted": N_("posted"),
        "pending": N_("held"),
        "post_pending": N_("hold posted"),
        "void_pending": N_("hold released"),
        "expire_pending": N_("hold timed out"),
    },
    "hold": {
        "pending": N_("held"),
        "posted": N_("posted"),
        "voided": N_("released"),
        "expired": N_("timed out"),
    },
    "unit": {"VOICE_S": N_("Minutes"), "DATA_B": N_("Data"), "SMS": N_("SMS")},
    "service": {"voice": N_("voice"), "data": N_("data"), "sms": N_("SMS")},
    "message": {"sent": N_("sent"), "failed": N_("failed")},
    "security": dict(EVENT_LABELS),
    "notice": {
        "account.closed": N_("Account closed"),
        "account.welcome": N_("Welcome"),
        "balance.low": N_("Balance low"),
        "bucket.used_80": N_("Bundle 80 percent used"),
        "bucket.used_up": N_("Bundle used up"),
        "code.attach_line": N_("Code to add a line"),
        "code.password_reset": N_("Password reset code"),
        "code.unlock": N_("Unlock code"),
        "code.verify_email": N_("E-mail verification code"),
        "code.verify_phone": N_("Phone verification code"),
        "line.attached": N_("Line added"),
        "line.entered_grace": N_("Line's validity ended"),
        "line.freeze_warning": N_("Line about to be frozen"),
        "line.frozen": N_("Line frozen"),
        "line.frozen_support": N_("Line frozen: contact support"),
        "line.gift_received": N_("Top-up received as a gift"),
        "line.grace_ending": N_("Grace period ending"),
        "line.resumed": N_("Line resumed"),
        "line.suspended": N_("Line suspended"),
        "line.terminated": N_("Line closed for good"),
        "line.termination_warning": N_("Line about to be closed"),
        "line.validity_ending": N_("Validity ending"),
        "order.applied": N_("Payment put on the balance"),
        "order.fulfilled": N_("Top-up credited"),
        "order.receipt": N_("Receipt"),
        "order.refunded": N_("Refund"),
        "security.account_locked": N_("Account locked"),
        "security.account_unlocked": N_("Account unlocked"),
        "security.contact_change_requested": N_("Contact change requested"),
        "security.contact_changed": N_("Contact changed"),
        "security.failed_logins": N_("Failed sign-ins"),
        "security.new_device": N_("Sign-in from a new device"),
        "security.passkey_added": N_("Passkey added"),
        "security.passkey_removed": N_("Passkey removed"),
        "security.passkey_two_step_enabled": N_("Two-step sign-in with a passkey turned on"),
        "security.password_changed": N_("Password changed"),
        "security.password_reset": N_("Password reset"),
        "security.recovery_code_used": N_("Recovery code used"),
        "security.recovery_codes_regenerated": N_("New recovery codes"),
        "security.registration_attempt": N_("Someone tried to register with your contact"),
        "security.totp_disabled": N_("Two-step verification turned off"),
        "security.totp_enabled": N_("Two-step verification turned on"),
        "ticket.opened": N_("Ticket opened"),
        "ticket.replied": N_("Ticket answered"),
        "ticket.resolved": N_("Ticket resolved"),
    },
}
"""Every code a back-office page shows, by kind, as words (msgids: translated like the rest)."""


def state_word(language: str, kind: str, code: object) -> str:
    """`code` of `kind` in `language`; an unknown one as it is, never an error."""
    text = "" if code is None else str(code)
    found = WORDS.get(kind, {}).get(text)
    return translate(language, found) if found else text


def country_name(language: str, code: object) -> str:
    """An ISO 3166-1 code as the staff member's language names it ("FR" → "France", "法国")."""
    text = "" if code is None else str(code)
    try:
        locale = Locale.parse(BABEL_LOCALES.get(language, "en"))
    except (ValueError, UnknownLocaleError):  # pragma: no cover - the five languages parse
        return text
    return str(locale.territories.get(text.upper(), text))


def refusal(language: str, permission: str, role: str | None) -> str:
    """A refused permission in words: what it allows, the member's role, and which roles may
    (from `roles.ROLE_PERMISSIONS`) — never the permission's code."""
    from simcharge.backoffice.roles import ROLE_PERMISSIONS  # roles → models: no cycle at import

    allowed = [r.value for r, held in ROLE_PERMISSIONS.items() if permission in held]
    may = ", ".join(state_word(language, "role", r) for r in allowed)
    what = state_word(language, "permission", permission)
    if role is None:
        return translate(language, N_("This is not allowed: {what}. Roles that may: {roles}.")).format(
            what=what, roles=may
        )
    return translate(
        language, N_("Your role ({role}) does not allow {what}. Roles that may: {roles}.")
    ).format(role=state_word(language, "role", role), what=what, roles=may)


DONE: dict[str, str] = {
    "done": N_("Done."),
    "password": N_("Your password was changed. Your other sessions have ended."),
    "session": N_("That session has ended: it is signed out."),
    "time_zone": N_("Your time zone is saved: times are written in it from now on."),
    "passkey_added": N_("The passkey was added: you can sign in with it."),
    "passkey_renamed": N_("The passkey was renamed."),
    "passkey_removed": N_("The passkey was removed: it no longer signs you in."),
    # An adjustment: its state (`AdjustmentState`).
    "awaiting_approval": N_(
        "The adjustment is not posted yet: it is above the limit, so a second person (finance "
        "or an admin) must approve it on the Adjustments page first."
    ),
    "applied": N_("The adjustment was posted to the line."),
    "approve": N_("Approved: the adjustment was posted to the line."),
    "reject": N_("Rejected: nothing was moved."),
    "unlocked": N_("The account is unlocked: the customer can sign in again."),
    "unfrozen": N_("The line is unfrozen."),
    "suspended": N_("The line is suspended: it cannot be used until it is resumed."),
    "resumed": N_("The line is resumed."),
    # A refund: its state (`orders.RefundState`).
    "refund_pending": N_(
        "The refund was asked of the provider and waits on its answer: the refund's state on "
        "the order says when the money has gone back."
    ),
    "refund_succeeded": N_("Refunded: the provider has sent the money back."),
    "refund_failed": N_("The provider refused the refund: see the order, it needs attention."),
    "applied_to_balance": N_("The payment was put on the line's balance."),
    "resolved": N_("Marked as resolved."),
    "receipt_resent": N_("The receipt is on its way to the customer again."),
    "credit_note_resent": N_("The credit note is on its way to the customer again."),
    # "Check with provider": what its answer did (`orders.fulfilment.Outcome`).
    "checked_fulfilled": N_("The provider says it is paid: the order was credited just now."),
    "checked_already": N_(
        "The provider's answer changes nothing: the order was settled (credited, refunded or "
        "closed) before."
    ),
    "checked_flagged": N_(
        "The provider says it is paid, but it was not credited: the order needs attention."
    ),
    "checked_closed": N_(
        "The provider says the payment failed, was cancelled or expired: the order is closed."
    ),
    "checked_unchanged": N_("The provider has nothing new: the payment is still pending."),
    "reply_sent": N_("Your reply was sent to the customer."),
    "note_saved": N_("Your internal note was saved (the customer does not see it)."),
    "ticket_saved": N_("The ticket is saved."),
    "catalog_saved": N_("Saved: the entry is at version {version} now."),
    "catalog_saved_new": N_("Saved: the entry is new."),
    "staff_changed": N_(
        "Saved. Every session of theirs has ended: they sign in again to go on."
    ),
    "staff_unchanged": N_("Nothing was changed: choose a role, access or a new authenticator."),
    "staff_password": N_(
        "Their password is set: every session of theirs has ended and their passkeys were "
        "removed; they must choose their own at their next sign-in."
    ),
    "staff_passkeys_removed": N_(
        "Their passkeys were removed and every session of theirs has ended."
    ),
    "retried": N_("The job is queued to run again."),
    "discarded": N_("The job was discarded: it will not run."),
    "access_off": N_(
        "You were signed out: an administrator switched your access off. Ask an administrator "
        "to switch it on again."
    ),
}
"""What each action's answer says, by its `done` code."""

SHOWN_BY_THE_PAGE = frozenset({"revoked"})
"""Codes whose page says what happened itself (the API keys' page: "The key was revoked…")."""

WARNINGS = frozenset({"awaiting_approval", "refund_failed", "checked_flagged", "access_off"})
"""Answers that are not plain success: shown as a warning, not a green "done"."""

_NUMBERED = re.compile(r"([a-z_]+)\.([0-9]{1,9})")


def done_message(language: str, raw: str | None) -> tuple[str, bool] | None:
    """The sentence for `?done=<raw>` and whether it warns, or None for no message. `raw` is a
    code of `DONE`, or `<code>.<number>` for one with a number in it (a catalog version); any
    other value is the plain "Done." (nothing of the query string reaches the page)."""
    if not raw or raw in SHOWN_BY_THE_PAGE:
        return None
    numbered = _NUMBERED.fullmatch(raw)
    if numbered and numbered.group(1) in DONE and "{version}" in DONE[numbered.group(1)]:
        text = translate(language, DONE[numbered.group(1)]).format(
            version=int(numbered.group(2))
        )
        return text, False
    found = DONE.get(raw)
    if found is None or "{" in found:
        return translate(language, DONE["done"]), False
    return translate(language, found), raw in WARNINGS
