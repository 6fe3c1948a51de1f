"""Settings: defaults, the environment, and refusing an insecure production."""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from simcharge.config import DEFAULT_SANDBOX_SECRET, DEFAULT_SECRET_KEY, Environment, Settings

GOOD_KEY = "k" * 40
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests fix every setting they look at; what the developer's shell or the Makefile
    exports (`make` exports SIMCHARGE_BASE_URL from PORT) must not change what they see."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"SIMCHARGE_{name.upper()}", raising=False)


def make(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[arg-type]


def test_defaults_run_on_sqlite_under_var() -> None:
    s = make()
    assert s.env is Environment.development
    assert s.database_url == "sqlite+aiosqlite:///var/simcharge.db"
    assert s.redis_url is None
    assert s.is_sqlite


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMCHARGE_BASE_URL", "https://top.example")
    monkeypatch.setenv("SIMCHARGE_REDIS_URL", "redis://127.0.0.1:6379/0")
    s = make()
    assert s.base_url == "https://top.example"
    assert s.redis_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("key", [DEFAULT_SECRET_KEY, "short-key"])
def test_production_refuses_a_default_or_short_secret_key(key: str) -> None:
    with pytest.raises(ValidationError, match="SIMCHARGE_SECRET_KEY"):
        make(env="production", secret_key=key, base_url="https://top.example")


def test_production_needs_https() -> None:
    with pytest.raises(ValidationError, match="https"):
        make(env="production", secret_key=GOOD_KEY, base_url="http://top.example")


def test_production_starts_with_a_real_key() -> None:
    s = make(env="production", secret_key=GOOD_KEY, base_url="https://top.example")
    assert s.env is Environment.production


@pytest.mark.parametrize("secret", [None, DEFAULT_SANDBOX_SECRET, "short"])
def test_production_refuses_the_sandbox_with_a_known_or_short_secret(secret: str | None) -> None:
    """Its webhooks would be forged with the secret everyone can read in the README."""
    kw: dict[str, Any] = {} if secret is None else {"sandbox_secret": secret}
    with pytest.raises(ValidationError, match="SIMCHARGE_SANDBOX_SECRET"):
        make(env="production", secret_key=GOOD_KEY, base_url="https://top.example",
             sandbox_enabled=True, **kw)
    s = make(env="production", secret_key=GOOD_KEY, base_url="https://top.example",
             sandbox_enabled=True, sandbox_secret="s" * 32)
    assert s.sandbox_on
    assert not make(env="production", secret_key=GOOD_KEY, base_url="https://top.example",
                    **kw).sandbox_on  # off by default in production: no secret needed


def test_production_refuses_an_smtp_password_over_plain_text() -> None:
    prod = {"env": "production", "secret_key": GOOD_KEY, "base_url": "https://top.example"}
    with pytest.raises(ValidationError, match="SIMCHARGE_SMTP_TLS"):
        make(**prod, smtp_host="mail.example", smtp_password="pw", smtp_tls="none")
    assert make(**prod, smtp_host="mail.example", smtp_password="pw", smtp_tls="starttls")
    assert make(**prod, smtp_host="relay.internal", smtp_tls="none")  # no password to leak
    assert make(smtp_host="127.0.0.1", smtp_password="pw", smtp_tls="none")  # development


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        make(env="staging")
    with pytest.raises(ValidationError):
        make(default_currency="dollars")


def shown(value: Any) -> str:
    """A default as the README's table shows it."""
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def readme_defaults() -> dict[str, str]:
    """The README's "Configuration" table: each setting's documented default."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, str] = {}
    for row in section.splitlines():
        if not row.startswith("| `SIMCHARGE_"):
            continue
        names_cell, default_cell = row.split("|")[1:3]
        names = re.findall(r"`(SIMCHARGE_\w+)`", names_cell)
        if default_cell.strip() == "unset":
            values = ["unset"] * len(names)
        else:
            values = re.findall(r"`([^`]*)`", default_cell)
        assert len(values) == len(names), f"one default per setting: {row}"
        for name, value in zip(names, values, strict=True):
            assert name not in documented, f"{name} is in the table twice"
            documented[name] = value
    return documented


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    documented = readme_defaults()
    defaults = make()
    for name in Settings.model_fields:
        env = f"SIMCHARGE_{name.upper()}"
        assert env in documented, f"{env} is not in the README's configuration table"
        assert documented[env] == shown(getattr(defaults, name)), f"{env}: README default"
    unknown = set(documented) - {f"SIMCHARGE_{n.upper()}" for n in Settings.model_fields}
    assert not unknown, f"the README documents settings that do not exist: {sorted(unknown)}"


def test_env_example_shows_defaults_uncommented_and_examples_commented() -> None:
    """`.env.example`: a setting that has a default is there uncommented with that default, so
    copying the file changes nothing; a setting unset by default is there commented out, with
    an example value."""
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    defaults = make()
    for name in Settings.model_fields:
        env = f"SIMCHARGE_{name.upper()}"
        active = [line for line in lines if line.startswith(f"{env}=")]
        commented = [line for line in lines if line.startswith(f"# {env}=")]
        assert len(active) + len(commented) == 1, f"{env}: once in .env.example"
        if getattr(defaults, name) is None:
            assert commented, f"{env} is unset by default: its line must be a commented example"
        else:
            assert active, f"{env} has a default: its line must show it, uncommented"
    # And read as simcharge reads an env file, the uncommented lines are exactly the defaults.
    from_file = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    assert from_file.model_dump() == defaults.model_dump()
    header = "\n".join(lines[:3]).lower()
    assert "uncommented" in header and "example" in header


def test_an_approval_threshold_in_an_unknown_currency_stops_the_start() -> None:
    """`SIMCHARGE_ADJUSTMENT_APPROVAL_CURRENCIES` is read by `kit.money.amounts_by_currency`, as
    the transfer settings are: a code that is no ISO 4217 currency (before, accepted and never
    matched) or a currency named twice stops the start, naming the setting."""
    for bad, said in (("XYZ:100", "not an ISO 4217 currency"), ("CNY:1,CNY:2", "named twice")):
        with pytest.raises(ValidationError, match=f"ADJUSTMENT_APPROVAL_CURRENCIES: .*{said}"):
            Settings(_env_file=None, adjustment_approval_currencies=bad)
    assert Settings(_env_file=None).approval_currencies == {
        "CNY": 14000, "HKD": 16000, "TWD": 64000, "PHP": 110000
    }
