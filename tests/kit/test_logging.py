"""What the log keeps and what it masks."""

from __future__ import annotations

from simcharge.kit.logging import _mask_secrets


def test_secrets_are_masked_and_what_an_investigation_needs_is_kept() -> None:
    event = {
        "event": "apikey.refused",
        "password": "hunter2hunter2",
        "code": "493021",
        "session_token": "abc",
        "Authorization": "Bearer x",
        "api_key": "sc_live_x",
        "otp": "123456",
        # An API key's public prefix (ASVS 7.1.3), a provider's error code, ids: kept.
        "key_prefix": "sc_ab12",
        "provider_error": "INSTRUMENT_DECLINED",
        "order_id": "01a2",
        "reason": "unknown",
    }
    masked = _mask_secrets(None, "warning", dict(event))
    assert {k for k, v in masked.items() if v == "***"} == {
        "password", "code", "session_token", "Authorization", "api_key", "otp"}
    for kept in ("event", "key_prefix", "provider_error", "order_id", "reason"):
        assert masked[kept] == event[kept]
