"""Round 17 (H6): the settings' problems came in two runs. A value refused by its own field
(`SIMCHARGE_PHONE_REGION=ph`) hid the checks across settings (production's secret key, base URL,
Twilio…) until it was fixed. Now both are said in one run: the checks across settings are made
on the other values, and a check that reads a refused value is left out (it would judge a
default the operator did not write)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from simcharge.config import Settings, settings_problems

SIMCHARGE = str(Path(sys.executable).with_name("simcharge"))


def _problems(**values: object) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **values)  # type: ignore[arg-type]
    assert caught.value.title == "Settings"
    return settings_problems(caught.value)


def test_field_errors_and_the_checks_across_settings_in_one_run() -> None:
    problems = _problems(
        env="production", base_url="http://x.example", phone_region="ph",
        db_pool_size=0, sms_provider="twilio",
    )
    assert problems == [
        "SIMCHARGE_DB_POOL_SIZE: Input should be greater than or equal to 1",
        "SIMCHARGE_PHONE_REGION: String should match pattern '^[A-Z]{2}$'",
        "SIMCHARGE_SECRET_KEY must be set to a random value of at least 32 characters in "
        "production",
        "SIMCHARGE_BASE_URL must be https:// in production",
        "SIMCHARGE_SMS_PROVIDER=twilio needs SIMCHARGE_TWILIO_ACCOUNT_SID, "
        "SIMCHARGE_TWILIO_AUTH_TOKEN and SIMCHARGE_TWILIO_FROM",
    ]


def test_a_check_reading_a_refused_value_is_left_out() -> None:
    # The minimum is refused: "exceeds the maximum" would compare the default (100) to 10.
    assert _problems(balance_transfer_min_amount=0, balance_transfer_max_amount=10) == [
        "SIMCHARGE_BALANCE_TRANSFER_MIN_AMOUNT: Input should be greater than or equal to 1"
    ]
    # SIMCHARGE_ENV refused: the production checks are not made (nor said of development).
    assert _problems(env="prod", base_url="http://x.example") == [
        "SIMCHARGE_ENV: Input should be 'development', 'test' or 'production'"
    ]
    # A refused SMTP_TLS: the password-in-clear check is left out; Twilio's is still made.
    problems = _problems(
        env="production", secret_key="k" * 40, base_url="https://charge.example.com",
        sandbox_enabled=False, smtp_password="pw", smtp_tls="plain", sms_provider="twilio",
    )
    assert problems[0].startswith("SIMCHARGE_SMTP_TLS: Input should be")
    assert problems[1:] == [
        "SIMCHARGE_SMS_PROVIDER=twilio needs SIMCHARGE_TWILIO_ACCOUNT_SID, "
        "SIMCHARGE_TWILIO_AUTH_TOKEN and SIMCHARGE_TWILIO_FROM"
    ]
    # A refused per-currency maximum: EUR's minimum is not compared to a default maximum.
    [only] = _problems(balance_transfer_max_amounts="usd:1", balance_transfer_min_amounts="EUR:9")
    assert only.startswith("SIMCHARGE_BALANCE_TRANSFER_MAX_AMOUNTS: String should match pattern")


def test_a_cross_check_still_fires_on_values_that_passed() -> None:
    problems = _problems(
        phone_region="ph", balance_transfer_min_voice_minutes=9,
        balance_transfer_max_voice_minutes=3, passkey_rp_id="10.0.0.1",
        alipay_private_key="k", alipay_private_key_file="/k.pem",
    )
    assert problems == [
        "SIMCHARGE_PHONE_REGION: String should match pattern '^[A-Z]{2}$'",
        "SIMCHARGE_BALANCE_TRANSFER_MIN_VOICE_MINUTES exceeds the maximum",
        "SIMCHARGE_PASSKEY_RP_ID must be a domain name (browsers refuse an IP address); unset "
        "it to turn passkeys off on a site reached by address",
        "set SIMCHARGE_ALIPAY_PRIVATE_KEY or SIMCHARGE_ALIPAY_PRIVATE_KEY_FILE, not both",
    ]


def test_valid_settings_still_load() -> None:
    assert Settings(_env_file=None, phone_region="PH").phone_region == "PH"


def test_the_command_says_both_in_one_run(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path), "SIMCHARGE_ENV": "production",
        "SIMCHARGE_BASE_URL": "https://charge.example.com", "SIMCHARGE_SANDBOX_ENABLED": "false",
        "SIMCHARGE_PHONE_REGION": "ph",
    }
    (tmp_path / ".env").write_text("SIMCHARGE_ORDER_TTL_MINUTES=1\n", encoding="utf-8")
    done = subprocess.run(
        [SIMCHARGE, "db", "current"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "simcharge: cannot start: SIMCHARGE_ORDER_TTL_MINUTES: Input should be greater than or "
        "equal to 5",
        "simcharge: cannot start: SIMCHARGE_PHONE_REGION: String should match pattern "
        "'^[A-Z]{2}$'",
        "simcharge: cannot start: SIMCHARGE_SECRET_KEY must be set to a random value of at "
        "least 32 characters in production",
    ]
