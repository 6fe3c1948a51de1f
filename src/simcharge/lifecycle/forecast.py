"""When time alone would next change a line's state, by the sweep's own rules (`service._due`):
what the portal tells a customer ("frozen on …, in N days"), what the warnings say, and whether
a queued warning is still true when it goes out (`jobs.warning_to_send`).

The sweep runs every few minutes, so a change happens up to one sweep interval after the time
given here; a line entering grace starts its grace period when the sweep moves it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from simcharge.lifecycle.service import Policy
from simcharge.lines.models import LineFacts, LineState


@dataclass(frozen=True, slots=True)
class Outlook:
    grace_at: datetime | None = None
    """An active line: when its validity ends and it enters grace."""
    freeze_at: datetime | None = None
    """An active line or one in grace: when it would be frozen if it is not topped up (or, for
    inactivity, not used)."""
    terminate_at: datetime | None = None
    """A frozen line: when it would be closed."""


def outlook(line: LineFacts, policy: Policy) -> Outlook:
    state = LineState(line.state)
    # A line in service that never had activity counts from when it entered its state (the
    # sweep's `start_activity_clocks`).
    active_since = line.last_activity_at or line.state_changed_at
    if state is LineState.active:
        freeze = active_since + policy.inactivity
        if line.validity_end is not None:
            freeze = min(freeze, line.validity_end + policy.grace)
        return Outlook(grace_at=line.validity_end, freeze_at=freeze)
    if state is LineState.grace:
        return Outlook(freeze_at=policy.frozen_from_grace(line.state_changed_at, active_since))
    if state is LineState.frozen:
        return Outlook(terminate_at=line.state_changed_at + policy.termination)
    # In stock, terminated or suspended: time alone changes nothing (a suspended line waits for
    # staff to resume it), so a warning queued before the suspension is dropped as it goes out.
    return Outlook()
