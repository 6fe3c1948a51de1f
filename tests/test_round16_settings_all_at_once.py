"""Every problem of the settings in one run: an operator fixing a production `.env` sees the
whole list at once, one line each, not one per start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from simcharge.config import Settings, settings_problems

SIMCHARGE = str(Path(sys.executable).with_name("simcharge"))


def test_every_production_problem_is_said_in_one_run(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SIMCHARGE_ENV": "production",
        "SIMCHARGE_BASE_URL": "http://charge.example.com",
        "SIMCHARGE_SMS_PROVIDER": "twilio",
        "SIMCHARGE_SMTP_PASSWORD": "pw",
        "SIMCHARGE_SMTP_TLS": "none",
        "SIMCHARGE_ALIPAY_PRIVATE_KEY": "k",
        "SIMCHARGE_ALIPAY_PRIVATE_KEY_FILE": "/k.pem",
        "SIMCHARGE_PASSKEY_RP_ID": "example.org",
    }
    done = subprocess.run(
        [SIMCHARGE, "db", "current"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert all(line.startswith("simcharge: cannot start: ") for line in lines), lines
    said = "\n".join(lines)
    for variable in (
        "SIMCHARGE_SECRET_KEY must be set",
        "SIMCHARGE_BASE_URL must be https://",
        "SIMCHARGE_SMTP_TLS=none with SIMCHARGE_SMTP_PASSWORD",
        "SIMCHARGE_SMS_PROVIDER=twilio needs",
        "SIMCHARGE_PASSKEY_RP_ID: the origin http://charge.example.com is not on example.org",
        "set SIMCHARGE_ALIPAY_PRIVATE_KEY or SIMCHARGE_ALIPAY_PRIVATE_KEY_FILE, not both",
    ):
        assert variable in said, said
    assert len(lines) == 6 and "pw" not in said.replace("password", "")


def test_settings_problems_splits_the_checks_and_keeps_field_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(
            _env_file=None, env="production", base_url="http://x.example",
            lifecycle_warning_days=[0], sms_provider="twilio",
        )
    problems = settings_problems(caught.value)
    assert problems[0].startswith("SIMCHARGE_SECRET_KEY must be set")
    assert "SIMCHARGE_BASE_URL must be https:// in production" in problems
    assert "SIMCHARGE_LIFECYCLE_WARNING_DAYS must list days between 1 and 365" in problems
    assert any(p.startswith("SIMCHARGE_SMS_PROVIDER=twilio") for p in problems)
    assert all("\n" not in p for p in problems)

    # A value refused by its own field is said as before (the checks across settings wait).
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, phone_region="ph")
    assert settings_problems(caught.value) == [
        "SIMCHARGE_PHONE_REGION: String should match pattern '^[A-Z]{2}$'"
    ]


def test_one_problem_is_one_line() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, sms_provider="twilio")
    assert settings_problems(caught.value) == [
        "SIMCHARGE_SMS_PROVIDER=twilio needs SIMCHARGE_TWILIO_ACCOUNT_SID, "
        "SIMCHARGE_TWILIO_AUTH_TOKEN and SIMCHARGE_TWILIO_FROM"
    ]
