"""How long a refund the provider still reports as pending is read again (README "Refunds").

Each real provider is driven through the whole schedule with a frozen clock in
`tests/orders/test_providers.py` (`…_is_read_for_ten_days_and_never_made_again`)."""

from __future__ import annotations

from datetime import timedelta

from simcharge.payments.jobs import (
    REFUND_FOLLOW_UP_LONGEST,
    REFUND_FOLLOW_UP_SPAN,
    REFUND_FOLLOW_UPS,
    refund_follow_up_delay,
)


def test_follow_ups_grow_to_every_four_hours_and_last_ten_days() -> None:
    """2, 4, 8 … 128 minutes apart, then every 4 hours: 66 reads, the last 10 days and 14
    minutes after the first answer — the fewest that cover 10 days (a WeChat Pay refund to a
    bank card: 1–3 working days; a PayPal eCheck: up to 6 business days to clear)."""
    delays = [refund_follow_up_delay(n) for n in range(1, REFUND_FOLLOW_UPS + 1)]
    assert delays[:8] == [timedelta(minutes=m) for m in (2, 4, 8, 16, 32, 64, 128, 240)]
    assert set(delays[7:]) == {REFUND_FOLLOW_UP_LONGEST} == {timedelta(hours=4)}
    assert sum(delays, timedelta()) == REFUND_FOLLOW_UP_SPAN == timedelta(days=10, minutes=14)
    assert sum(delays[:-1], timedelta()) < timedelta(days=10)
    # A follow-up number past the schedule (a job written by an older schedule) still waits
    # the longest interval; it never overflows.
    assert refund_follow_up_delay(10_000) == REFUND_FOLLOW_UP_LONGEST
