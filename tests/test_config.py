"""Settings: defaults, the environment, and refusing an insecure production."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from simcharge.config import DEFAULT_SECRET_KEY, Environment, Settings

GOOD_KEY = "k" * 40


def make(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[arg-type]


def test_defaults_run_on_sqlite_under_var(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SIMCHARGE_DATABASE_URL", "SIMCHARGE_ENV", "SIMCHARGE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
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


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        make(env="staging")
    with pytest.raises(ValidationError):
        make(default_currency="dollars")


def test_every_setting_is_documented_with_its_default() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    example = (root / ".env.example").read_text(encoding="utf-8")
    readme = (root / "README.md").read_text(encoding="utf-8")
    defaults = make()
    for name in Settings.model_fields:
        env = f"SIMCHARGE_{name.upper()}"
        assert env in readme, f"{env} is not in the README"
        value = getattr(defaults, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        shown = (
            "" if value is None else str(value.value if hasattr(value, "value") else value).lower()
        )
        documented = [
            line for line in example.splitlines() if line.lstrip("# ").startswith(f"{env}=")
        ]
        assert documented, f"{env} is not in .env.example"
        if value is not None:
            assert documented[0].lstrip("# ").split("=", 1)[1].lower() == shown, env
