"""One typed settings object for the whole process (prefix ``SIMCHARGE_``)."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from simcharge.kit.clock import operator_zone
from simcharge.kit.money import amounts_by_currency

DEFAULT_SECRET_KEY = "dev-insecure-change-me"  # noqa: S105 - refused in production
MIN_SECRET_KEY_LENGTH = 32
DEFAULT_SANDBOX_SECRET = "sandbox-webhook-secret"  # noqa: S105 - refused in production
VAR_DIR = Path("var")


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


_PER_CURRENCY = r"^\s*([A-Z]{3}:\d+(\s*,\s*[A-Z]{3}:\d+)*)?\s*$"
"""`CUR:amount,…` (`amounts_by_currency` checks the codes): a setting per wallet currency."""
DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
"""The databases simcharge runs on, with the drivers it uses."""


class Settings(BaseSettings):
    """Every setting simcharge reads; documented one by one in `.env.example` and the README."""

    model_config = SettingsConfigDict(
        env_prefix="SIMCHARGE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,  # `SIMCHARGE_X=` in an env file means "not set"
    )

    env: Environment = Environment.development
    database_url: str = f"sqlite+aiosqlite:///{VAR_DIR}/simcharge.db"
    secret_key: str = DEFAULT_SECRET_KEY
    secret_key_previous: SecretStr | None = None
    """Older secret keys, comma-separated, newest first: read only (TOTP secrets, recovery codes
    and queued codes made under them still open), never used to seal, hash or sign anything new.
    See `secret_keys` and README, "Rotating the secret key"."""
    base_url: str = "http://127.0.0.1:8000"
    redis_url: str | None = None

    operator_name: str = "simcharge"
    operator_logo: Path | None = None
    """An SVG or PNG file shown in the portal's header; unset: the operator's initial."""
    brand_color: str = Field(default="#0b6e4f", pattern=r"^#[0-9a-fA-F]{6}$")
    """The portal's main colour (buttons, links, bars)."""
    brand_accent: str = Field(default="#f5f7f6", pattern=r"^#[0-9a-fA-F]{6}$")
    """The portal's background tint."""
    privacy_notice_url: str | None = None
    """The operator's privacy notice (GDPR art. 13, Philippine DPA sec. 16): an `https://` URL
    or a path on this site (`/privacy`), linked from every page's footer, the registration
    form, "Your data" and every e-mail; unset: no link, and `simcharge serve` in production
    logs `config.no_privacy_notice` at every start."""
    default_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    default_language: str = "en"

    font_cache_dir: Path = VAR_DIR / "fonts"
    """Where the receipts' common font subsets are kept (made at the first receipt, or by
    `simcharge receipt-fonts`)."""

    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """How long opening a PostgreSQL connection may take (every process); past it, 503."""
    db_statement_timeout_seconds: float = Field(default=30.0, ge=0, le=3600)
    """How long a PostgreSQL statement of a web process may take (0: no limit); past it, 503
    `service-unavailable` with `Retry-After`. The command line and `simcharge worker` have
    none (migrations, imports, sweeps run long). See `db.Timeouts`."""
    portal_pages_at_once: int = Field(default=4, ge=0, le=1000)
    """Pages of the user center a web process builds at once; the others wait their turn, in
    arrival order (0: no limit). See README, "Page turns"."""
    max_body_bytes: int = Field(default=1_048_576, ge=4096, le=64 * 1_048_576)
    """The largest request body the site reads (`413 request-too-large` above it, before the
    body is read); a usage batch (`POST /api/v1/usage`) may be ten times as large."""
    db_echo: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool = False

    worker_in_process: bool = True
    worker_in_process_concurrency: int = Field(default=10, ge=1, le=64)
    """Jobs the in-process worker runs at once (sending mail, calling providers, receipts): one
    at a time would keep a payment's confirmation waiting behind every receipt."""
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    worker_lease_seconds: int = Field(default=60, ge=5)
    """How long a claimed job is a worker's without news from it: the worker renews the lease
    every third of it while the job runs; if the worker dies, the job runs again after this."""
    worker_job_timeout_seconds: float = Field(default=600.0, gt=0)
    """A job still running after this is cancelled and retried later (with backoff)."""
    worker_shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    """On shutdown, how long jobs in hand may finish; those still running are then given back."""

    # --- identity: sessions, codes, delivery of e-mail and SMS ---------------------------------
    session_idle_minutes: int = Field(default=30, ge=1)
    auth_min_response_ms: int = Field(default=400, ge=0)
    session_absolute_hours: int = Field(default=12, ge=1)
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "simcharge <no-reply@localhost>"
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    smtp_reply_to: str | None = Field(default=None, pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+$")
    """`Reply-To` of every e-mail (e.g. customer service's address); unset: none."""
    smtp_return_path: str | None = Field(default=None, pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+$")
    """Envelope sender (`MAIL FROM`), where bounces go; unset: the `From` address."""
    sms_provider: Literal["outbox", "twilio"] = "outbox"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_api_base: str = "https://api.twilio.com"
    passkey_rp_id: str | None = None
    """The WebAuthn relying party id passkeys are bound to (a domain name, the site's or one
    it is under); unset: the host of `base_url`, and no passkeys when that is an IP address."""
    passkey_origins: str | None = None
    """The origins (`https://host[:port]`, comma-separated) a passkey ceremony may come from;
    unset: `base_url`'s."""

    # --- Orders and the sandbox payment provider ---------------------------------------------
    order_ttl_minutes: int = Field(default=30, ge=5, le=1440)
    quote_ttl_minutes: int = Field(default=15, ge=1, le=1440)
    sandbox_enabled: bool | None = None
    """The built-in sandbox provider; default: on except in production."""
    sandbox_stands_in: bool | None = None
    """The sandbox serves methods whose real provider has no credentials (demos); default: on
    except in production."""
    sandbox_secret: SecretStr = SecretStr(DEFAULT_SANDBOX_SECRET)
    sandbox_webhook_copies: int = Field(default=1, ge=1, le=10)
    sandbox_webhook_max_delay_seconds: float = Field(default=0.0, ge=0, le=3600)

    # --- Line lifecycle --------------------------------------------------------------------
    lifecycle_grace_days: int = Field(default=30, ge=0, le=3650)
    """A line whose validity ended stays in grace this long (top-ups reactivate it)."""
    lifecycle_inactivity_days: int = Field(default=180, ge=1, le=3650)
    """No chargeable activity and no top-up for this long: the line is frozen."""
    lifecycle_termination_days: int = Field(default=365, ge=1, le=3650)
    """A line frozen this long is terminated."""
    lifecycle_warning_days: list[int] = Field(default_factory=lambda: [7, 1])
    """Customers are warned this many days before each change."""
    lifecycle_topup_validity_days: int = Field(default=30, ge=0, le=3650)
    """A paid top-up that leaves the validity of a line in grace (or of a frozen line it brings
    back) ended — money alone, or a plan without validity — makes it run this many days from
    now, so that any top-up reactivates the line (0: only a plan's validity does)."""
    lifecycle_frozen_reactivation: Literal["topup", "owner_topup", "support"] = "topup"
    """Who may bring a frozen line back: any paid top-up, a paid top-up by the line's owner,
    or only customer service (`lifecycle.service.unfreeze`)."""
    lifecycle_batch_size: int = Field(default=1000, ge=10, le=100_000)
    """Lines (or buckets) changed per transaction by the lifecycle sweep."""

    # --- Data retention (`accounts.retention`: the daily `privacy.retention` job) -----------
    # Days after which each kind of personal or operational data is deleted or anonymised; 0:
    # kept for ever; a negative number stops the start. README, "Data retention".
    retention_security_client_days: int = Field(default=90, ge=0, le=36500)
    """Security events lose their IP address and user agent this long after they happened."""
    retention_security_events_days: int = Field(default=730, ge=0, le=36500)
    """Security events are deleted this long after they happened."""
    retention_sessions_days: int = Field(default=90, ge=0, le=36500)
    """Customer and staff sessions are deleted this long after they ended (absolute timeout)."""
    retention_codes_days: int = Field(default=30, ge=0, le=36500)
    """One-time codes (and the address or number they went to) are deleted this long after
    they expired."""
    retention_devices_days: int = Field(default=365, ge=0, le=36500)
    """A known device not seen for this long is forgotten (a sign-in from it alerts again)."""
    retention_throttles_days: int = Field(default=30, ge=0, le=36500)
    """A login name's failure count untouched for this long (and not locked out) is deleted."""
    retention_messages_days: int = Field(default=180, ge=0, le=36500)
    """The log of e-mails and SMS sent is deleted after this long."""
    retention_notices_days: int = Field(default=365, ge=0, le=36500)
    """Portal notices are deleted after this long."""
    retention_idempotency_days: int = Field(default=30, ge=0, le=36500)
    """Orders' `Idempotency-Key`s are forgotten after this long (a retry later orders again)."""
    retention_provider_bodies_days: int = Field(default=180, ge=0, le=36500)
    """Payment notifications lose their raw body, headers and payload (payer names, e-mail
    addresses) this long after they arrived; what they reported stays."""
    retention_charging_sessions_days: int = Field(default=90, ge=0, le=36500)
    """Closed charging sessions (subscriber ids, answers) are deleted this long after they
    opened."""
    retention_dead_jobs_days: int = Field(default=90, ge=0, le=36500)
    """Dead outbox jobs of the kinds that carry personal data (notifications: addresses, names,
    texts) lose it this long after they died; the job stays, and can no longer be retried."""
    retention_closed_tickets_days: int = Field(default=730, ge=0, le=36500)
    """The tickets of a closed account lose their subject and messages' text this long after
    the closure; the ticket, its dates and status stay."""
    retention_passkey_challenges_days: int = Field(default=1, ge=0, le=36500)
    """Passkey challenges (used once, valid minutes) are deleted this long after they expired."""
    retention_usage_detail_days: int = Field(default=365, ge=0, le=36500)
    """Usage records lose their traffic and location detail (country and zone emptied, the start
    cut to its day) this long after they started; what was charged stays."""
    retention_batch_size: int = Field(default=1000, ge=10, le=100_000)
    """Rows deleted or anonymised per transaction by the retention sweep."""

    # --- Balance transfers between lines (TMF654 transferBalance, the portal) ---------------
    balance_transfer_fee_percent: Decimal = Field(default=Decimal("0"), ge=0, le=50)
    """Fee on a money transfer, in percent of the amount (rounded half up), paid by the giver."""
    balance_transfer_fee_fixed: int = Field(default=0, ge=0)
    """Fixed fee per transfer in minor units of the giver's currency (units transfers too)."""
    balance_transfer_min_amount: int = Field(default=100, ge=1)
    """Smallest money transfer, minor units."""
    balance_transfer_max_amount: int = Field(default=5000, ge=1)
    """Largest money transfer, minor units."""
    balance_transfer_max_data_mb: int = Field(default=10240, ge=1)
    """Largest data transfer, MB."""
    balance_transfer_max_voice_minutes: int = Field(default=500, ge=1)
    """Largest voice transfer, minutes."""
    balance_transfer_daily_count: int = Field(default=5, ge=1)
    """Transfers a line may give per 24 hours."""
    balance_transfer_min_amounts: str = Field(
        default="CNY:700,HKD:800,TWD:3000,PHP:5000,JPY:150,KRW:1500,BHD:400,KWD:300",
        pattern=_PER_CURRENCY,
    )
    """Per wallet currency (`CUR:minor units,…`), the smallest money transfer: 100 minor units
    are 1.00 US dollar but 100 yen and 0.100 dinar, so each currency gets its own (the
    defaults: about 1 US dollar). A currency not listed: `balance_transfer_min_amount`."""
    balance_transfer_max_amounts: str = Field(
        default=(
            "CNY:35000,HKD:40000,TWD:150000,PHP:280000,JPY:7500,KRW:70000,BHD:19000,KWD:15000"
        ),
        pattern=_PER_CURRENCY,
    )
    """Per wallet currency, the largest money transfer (the defaults: about 50 US dollars); a
    currency not listed: `balance_transfer_max_amount`."""
    balance_transfer_fee_fixed_amounts: str = Field(default="", pattern=_PER_CURRENCY)
    """Per wallet currency, the fixed fee per transfer; a currency not listed:
    `balance_transfer_fee_fixed`."""
    balance_transfer_min_voice_minutes: int = Field(default=1, ge=1)
    """Smallest voice transfer, minutes."""
    balance_transfer_min_data_mb: int = Field(default=1, ge=1)
    """Smallest data transfer, MB."""
    balance_transfer_max_sms: int = Field(default=500, ge=1)
    """Largest SMS transfer, messages."""
    tmf654_topup_max_minor: int = Field(default=10000, ge=1)
    """The most one TMF654 `topupBalance` puts on a wallet, minor units (a currency not named in
    `tmf654_topup_max_amounts`); more is refused (409 `topup-limit-exceeded`)."""
    tmf654_topup_max_amounts: str = Field(
        default=(
            "CNY:70000,HKD:80000,TWD:300000,PHP:560000,JPY:15000,KRW:140000,BHD:38000,KWD:30000"
        ),
        pattern=_PER_CURRENCY,
    )
    """Per wallet currency (`CUR:minor units,…`), the same maximum (the defaults: about 100 US
    dollars)."""

    @property
    def sandbox_on(self) -> bool:
        return self.sandbox_enabled if self.sandbox_enabled is not None else (
            self.env is not Environment.production)

    @property
    def sandbox_substitutes(self) -> bool:
        return self.sandbox_on and (self.sandbox_stands_in if self.sandbox_stands_in is not None
                                    else self.env is not Environment.production)

    # --- Charging ------------------------------------------------------------------------------
    charging_rating_groups: str = Field(
        default="100=voice,200=data,300=sms",
        pattern=r"^\s*\d+\s*=\s*(voice|data|sms)\s*(,\s*\d+\s*=\s*(voice|data|sms)\s*)*$",
    )
    """Nchf rating groups and the service each one is rated as: `100=voice,200=data,…`."""
    charging_validity_seconds: int = Field(default=3600, ge=10, le=86400)
    charging_session_grace_seconds: int = Field(default=300, ge=0, le=86400)
    charging_quota_voice_seconds: int = Field(default=300, ge=1)
    charging_quota_data_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    charging_max_quota_voice_seconds: int = Field(default=3600, ge=1)
    charging_max_quota_data_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    charging_low_balance: int = Field(default=200, ge=0)
    charging_rating_cache_seconds: float = Field(default=10.0, ge=0)
    charging_api_key_cache_seconds: float = Field(default=30.0, ge=0)
    usage_chunk_size: int = Field(default=50000, ge=1, le=200000)

    # --- Back office ---------------------------------------------------------------------------
    staff_session_idle_minutes: int = Field(default=30, ge=1)
    staff_session_absolute_hours: int = Field(default=10, ge=1)
    phone_region: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    """ISO 3166 region in which a number typed without its country code is read (staff search:
    "0917 234 5678" under `PH`); unset, such input is searched as text."""
    operator_timezone: str = "UTC"
    """IANA time zone whose days the reports use (each row's day, `from`/`to`, the trial
    balance's day); a name the time zone database does not know stops the start-up."""
    staff_reset_password_hours: int = Field(default=24, ge=1)
    """A staff password set by someone else (an admin's reset) signs in for this long; its holder
    must replace it at first use."""
    adjustment_approval_above: int = Field(default=2000, ge=0)
    """A wallet adjustment of more than this many minor units needs a second staff member (in a
    currency not named in `adjustment_approval_currencies`)."""
    adjustment_approval_currencies: str = Field(
        default="CNY:14000,HKD:16000,TWD:64000,PHP:110000",
        pattern=r"^([A-Z]{3}:\d+(,[A-Z]{3}:\d+)*)?$",
    )
    """Per wallet currency (`CUR:minor units,…`), the same threshold: 2000 minor units are 20.00
    US dollars but 20.00 pesos, so each currency gets its own (the defaults: about 20 dollars)."""
    adjustment_approval_units: str = Field(
        default="VOICE_S:3600,DATA_B:1073741824,SMS:100",
        pattern=r"^(VOICE_S|DATA_B|SMS):\d+(,(VOICE_S|DATA_B|SMS):\d+)*$",
    )
    """Per unit (`UNIT:amount,…`): a bucket adjustment of more than this needs a second staff
    member; a unit not listed always does."""
    order_pending_alert_minutes: int = Field(default=60, ge=1)
    """An order still pending after this long is listed among payments needing attention."""
    tickets_max_open: int = Field(default=5, ge=1, le=1000)
    """A customer with this many tickets open (with customer service, or waiting for their
    answer) is refused another (`409 too-many-open-tickets`) until one is resolved or closed."""

    # --- Payment provider credentials ----------------------------------------------------------
    # All optional: a provider whose required credentials are not all set is not offered
    # (`simcharge.payments.providers.configured_providers`). Secrets are `SecretStr`, so they
    # never show in a repr or a log line. A base URL left unset means the provider's live one.
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    paypal_client_id: str | None = None
    paypal_client_secret: SecretStr | None = None
    paypal_webhook_id: str | None = None
    paypal_merchant_id: str | None = None
    paypal_api_base: str | None = None
    alipay_app_id: str | None = None
    alipay_private_key: SecretStr | None = None
    alipay_private_key_file: Path | None = None
    alipay_public_key: str | None = None
    alipay_gateway: str | None = None
    alipay_seller_id: str | None = None
    """Our Alipay seller id (`2088…`): notifications naming another seller are rejected; unset,
    the seller is not compared."""
    wechatpay_mchid: str | None = None
    wechatpay_appid: str | None = None
    wechatpay_serial_no: str | None = None
    wechatpay_private_key: SecretStr | None = None
    wechatpay_private_key_file: Path | None = None
    wechatpay_apiv3_key: SecretStr | None = None
    wechatpay_platform_keys: dict[str, str] | None = None
    wechatpay_api_base: str | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem_at_once(
        cls, data: Any, handler: ModelWrapValidatorHandler[Settings]
    ) -> Settings:
        """Every problem at once, one line each (`settings_problems` splits them): an operator
        fixing a production `.env` sees the whole list in one run, not one per start. A value
        refused by its own field does not hide the checks across settings: they are made on
        the other values (the refused ones at their defaults), leaving out each check that
        reads a refused value (it would judge a value the operator did not write)."""
        try:
            settings = handler(data)
        except ValidationError as exc:
            refused = frozenset(str(e["loc"][0]) for e in exc.errors() if e.get("loc"))
            if not refused or not isinstance(data, dict):
                raise
            try:
                rest = handler({k: v for k, v in data.items() if k not in refused})
            except ValidationError:
                raise exc from None
            problems = rest._problems_across(refused)
            if not problems:
                raise
            across: InitErrorDetails = {
                "type": "value_error", "loc": (), "input": data,
                "ctx": {"error": ValueError("\n".join(problems))},
            }
            raise ValidationError.from_exception_data(
                cls.__name__, [*_details(exc), across]
            ) from None
        problems = settings._problems_across(frozenset())
        if problems:
            raise ValueError("\n".join(problems))
        return settings

    def _problems_across(self, refused: frozenset[str]) -> list[str]:
        """The checks across settings, each with the settings it reads: one that reads a value
        in `refused` (refused by its own field, so here at its default) is left out."""
        checks: list[tuple[tuple[str, ...], str]] = []
        if self.env is Environment.production:
            if (
                self.secret_key == DEFAULT_SECRET_KEY
                or len(self.secret_key) < MIN_SECRET_KEY_LENGTH
            ):
                checks.append((("env", "secret_key"),
                    "SIMCHARGE_SECRET_KEY must be set to a random value of at least "
                    f"{MIN_SECRET_KEY_LENGTH} characters in production"
                ))
            if any(
                key == DEFAULT_SECRET_KEY or len(key) < MIN_SECRET_KEY_LENGTH
                for key in self.secret_keys[1:]
            ):
                checks.append((("env", "secret_key", "secret_key_previous"),
                    "SIMCHARGE_SECRET_KEY_PREVIOUS: each key must be a random value of at least "
                    f"{MIN_SECRET_KEY_LENGTH} characters in production"
                ))
            if not self.base_url.startswith("https://"):
                checks.append((("env", "base_url"),
                               "SIMCHARGE_BASE_URL must be https:// in production"))
            if not _url_host(self.base_url):
                checks.append((("env", "base_url"),
                    "SIMCHARGE_BASE_URL must name the site's host in production "
                    "(https://charge.example.com)"
                ))
            if self.sandbox_on and (
                self.sandbox_secret.get_secret_value() == DEFAULT_SANDBOX_SECRET
                or len(self.sandbox_secret.get_secret_value()) < MIN_SECRET_KEY_LENGTH
            ):
                checks.append((("env", "sandbox_enabled", "sandbox_secret"),
                    "SIMCHARGE_SANDBOX_ENABLED in production needs SIMCHARGE_SANDBOX_SECRET set "
                    f"to a random value of at least {MIN_SECRET_KEY_LENGTH} characters"
                ))
            if self.smtp_password and self.smtp_tls == "none":
                checks.append((("env", "smtp_password", "smtp_tls"),
                    "SIMCHARGE_SMTP_TLS=none with SIMCHARGE_SMTP_PASSWORD would send the password "
                    "in plain text: use starttls or tls in production"
                ))

        if self.sms_provider == "twilio" and not (
            self.twilio_account_sid and self.twilio_auth_token and self.twilio_from
        ):
            checks.append((
                ("sms_provider", "twilio_account_sid", "twilio_auth_token", "twilio_from"),
                "SIMCHARGE_SMS_PROVIDER=twilio needs SIMCHARGE_TWILIO_ACCOUNT_SID, "
                "SIMCHARGE_TWILIO_AUTH_TOKEN and SIMCHARGE_TWILIO_FROM"
            ))
        if not self.lifecycle_warning_days or any(
            d < 1 or d > 365 for d in self.lifecycle_warning_days
        ):
            checks.append((("lifecycle_warning_days",),
                           "SIMCHARGE_LIFECYCLE_WARNING_DAYS must list days between 1 and 365"))
        if self.balance_transfer_min_amount > self.balance_transfer_max_amount:
            checks.append((("balance_transfer_min_amount", "balance_transfer_max_amount"),
                           "SIMCHARGE_BALANCE_TRANSFER_MIN_AMOUNT exceeds the maximum"))
        for name in ("adjustment_approval_currencies", "tmf654_topup_max_amounts"):
            try:
                amounts_by_currency(getattr(self, name))
            except ValueError as exc:
                checks.append(((name,), f"SIMCHARGE_{name.upper()}: {exc}"))
        listed: set[str] = set()
        readable = True
        per_currency = tuple(
            f"balance_transfer_{name}" for name in ("min_amounts", "max_amounts", "fee_fixed_amounts")
        )
        for name in per_currency:
            try:
                listed |= amounts_by_currency(getattr(self, name)).keys()
            except ValueError as exc:
                checks.append(((name,), f"SIMCHARGE_{name.upper()}: {exc}"))
                readable = False
        for currency in sorted(listed) if readable else ():
            low, high, _ = self.transfer_money_terms(currency)
            if low > high:
                checks.append((
                    (*per_currency, "balance_transfer_min_amount", "balance_transfer_max_amount"),
                    f"SIMCHARGE_BALANCE_TRANSFER_MIN_AMOUNTS: {currency} exceeds its maximum",
                ))
        if self.balance_transfer_min_voice_minutes > self.balance_transfer_max_voice_minutes:
            checks.append((
                ("balance_transfer_min_voice_minutes", "balance_transfer_max_voice_minutes"),
                "SIMCHARGE_BALANCE_TRANSFER_MIN_VOICE_MINUTES exceeds the maximum",
            ))
        if self.balance_transfer_min_data_mb > self.balance_transfer_max_data_mb:
            checks.append((("balance_transfer_min_data_mb", "balance_transfer_max_data_mb"),
                           "SIMCHARGE_BALANCE_TRANSFER_MIN_DATA_MB exceeds the maximum"))
        checks += [
            (("passkey_rp_id", "passkey_origins", "base_url"), problem)
            for problem in self._passkey_problems()
        ]
        checks += [
            ((name, f"{name}_file"), problem)
            for name, problem in self._private_key_problems()
        ]
        return [problem for inputs, problem in checks if refused.isdisjoint(inputs)]

    @field_validator("charging_rating_groups")
    @classmethod
    def _rating_groups_once_each(cls, value: str) -> str:
        """Each rating group once, and an Nchf `RatingGroup` (Uint32): a group listed twice
        would be rated as whichever came last, one beyond 4294967295 never arrives. The start
        says which, named `SIMCHARGE_CHARGING_RATING_GROUPS` (`settings_problems`)."""
        seen: dict[int, str] = {}
        for part in value.split(","):
            key, service = (p.strip() for p in part.split("=", 1))
            group = int(key) if key.isascii() and len(key.lstrip("0")) <= 10 else -1
            if not 0 <= group <= 2**32 - 1:
                raise ValueError(
                    f"rating group {key[:20]}{'…' if len(key) > 20 else ''} is out of range "
                    "(a rating group is 0 to 4294967295)"
                )
            if group in seen:
                raise ValueError(
                    f"rating group {group} is listed twice ({seen[group]} and {service}); "
                    "list each once"
                )
            seen[group] = service
        return value

    @field_validator("privacy_notice_url")
    @classmethod
    def _privacy_notice_where_anyone_reads_it(cls, value: str | None) -> str | None:
        """An `https://` address with a host, or a path on this site (`/privacy`): never
        `http://` (a notice anyone on the way may change), `javascript:` or another site's
        address without a scheme (`//host`)."""
        value = (value or "").strip()
        if not value:
            return None
        if any(c.isspace() or c in "\\<>\"'`" for c in value):
            raise ValueError("an address may not hold spaces, quotes, angle brackets or backslashes")
        if (value.startswith("/") and not value.startswith("//")) or (
            value.startswith("https://") and _url_host(value)
        ):
            return value
        raise ValueError(
            "give an https:// address (https://example.com/privacy) or a path on this site "
            "(/privacy)"
        )

    @property
    def privacy_notice_address(self) -> str | None:
        """The privacy notice's full address (a path on this site under `base_url`), for what
        is read elsewhere than on the site (an e-mail)."""
        url = self.privacy_notice_url
        if url is None or not url.startswith("/"):
            return url
        return self.base_url.rstrip("/") + url

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("operator_timezone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        operator_zone(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _a_driver_we_run_on(cls, value: str) -> str:
        """SQLite through aiosqlite or PostgreSQL through asyncpg: `postgres://…` or
        `postgresql://…` (no driver named) is refused with what to write instead."""
        try:
            driver = make_url(value).drivername
        except ArgumentError:
            raise ValueError("not a database URL") from None
        if driver not in DATABASE_DRIVERS:
            raise ValueError(
                "use postgresql+asyncpg://… (PostgreSQL) or sqlite+aiosqlite:///… (SQLite)"
            )
        return value

    def _passkey_problems(self) -> list[str]:
        """A relying party id set by hand must be a domain name that each passkey origin is
        on: a passkey made for it would otherwise never work (browsers refuse an IP address)."""
        if self.passkey_rp_id is None:
            return []
        rp_id = self.passkey_rp_id.strip().lower()
        if not _is_domain(rp_id):
            return [
                "SIMCHARGE_PASSKEY_RP_ID must be a domain name (browsers refuse an IP "
                "address); unset it to turn passkeys off on a site reached by address"
            ]
        return [
            f"SIMCHARGE_PASSKEY_RP_ID: the origin {origin} is not on {rp_id}"
            for origin in self.passkey_origin_list
            if (host := (urlsplit(origin).hostname or "").lower()) != rp_id
            and not host.endswith("." + rp_id)
        ]

    @property
    def passkey_origin_list(self) -> list[str]:
        """The origins passkey ceremonies may come from (scheme, host and port, no path)."""
        raw = self.passkey_origins or self.base_url
        origins = []
        for item in raw.split(","):
            parts = urlsplit(item.strip())
            if parts.scheme and parts.netloc:
                origins.append(f"{parts.scheme}://{parts.netloc}".lower())
        return origins

    @property
    def passkey_rp(self) -> str | None:
        """The relying party id of passkeys, or None when they are off (the site is reached by
        an IP address and no `passkey_rp_id` names its domain)."""
        if self.passkey_rp_id is not None:
            return self.passkey_rp_id.strip().lower()
        host = (urlsplit(self.base_url).hostname or "").lower()
        return host if _is_domain(host) else None

    def _private_key_problems(self) -> list[tuple[str, str]]:
        """Each key given twice (value and file), with the setting's name."""
        return [
            (name, f"set SIMCHARGE_{name.upper()} or SIMCHARGE_{name.upper()}_FILE, not both")
            for name in ("alipay_private_key", "wechatpay_private_key")
            if getattr(self, name) is not None and getattr(self, f"{name}_file") is not None
        ]

    @property
    def rating_groups(self) -> dict[int, str]:
        pairs = (p.split("=") for p in self.charging_rating_groups.split(","))
        return {int(k): v.strip() for k, v in pairs}

    @property
    def approval_units(self) -> dict[str, int]:
        pairs = (part.split(":", 1) for part in self.adjustment_approval_units.split(","))
        return {unit: int(amount) for unit, amount in pairs}

    @property
    def approval_currencies(self) -> dict[str, int]:
        return amounts_by_currency(self.adjustment_approval_currencies)

    def transfer_money_terms(self, currency: str) -> tuple[int, int, int]:
        """The smallest and largest money transfer from a wallet in `currency`, and the fixed
        fee per transfer from it, in its minor units: its own if listed, else the fallbacks."""
        return (
            amounts_by_currency(self.balance_transfer_min_amounts).get(
                currency, self.balance_transfer_min_amount),
            amounts_by_currency(self.balance_transfer_max_amounts).get(
                currency, self.balance_transfer_max_amount),
            amounts_by_currency(self.balance_transfer_fee_fixed_amounts).get(
                currency, self.balance_transfer_fee_fixed),
        )

    def tmf654_topup_max(self, currency: str) -> int:
        """The most one TMF654 top-up puts on a wallet in `currency`, in its minor units."""
        return amounts_by_currency(self.tmf654_topup_max_amounts).get(
            currency, self.tmf654_topup_max_minor
        )

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """The key ring: `secret_key` (seals, hashes and signs) first, then each key of
        `secret_key_previous` (read only), in its order; empty entries and repeats left out."""
        ring = [self.secret_key]
        raw = self.secret_key_previous.get_secret_value() if self.secret_key_previous else ""
        for key in (part.strip() for part in raw.split(",")):
            if key and key not in ring:
                ring.append(key)
        return tuple(ring)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def secure_cookies(self) -> bool:
        """Cookies are `Secure` (and `__Host-` prefixed) whenever the site is served over https."""
        return self.base_url.startswith("https://")


def _is_domain(host: str) -> bool:
    """A host name a WebAuthn relying party id may be: not an IP address, not empty."""
    if not host or host.startswith(".") or host.endswith("."):
        return False
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True
    return False


def settings_problems(exc: ValidationError) -> list[str]:
    """What is wrong with the settings, one line each, naming the variable to fix (never its
    value: it may be a secret)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = error.get("loc") or ()
        if loc:
            problems.append(f"SIMCHARGE_{str(loc[0]).upper()}: {message}")
        else:  # the checks across settings: every problem found, one per line
            problems.extend(line for line in message.splitlines() if line)
    return problems


def _details(exc: ValidationError) -> list[InitErrorDetails]:
    """`exc`'s errors as they are raised again, with others (`Settings._every_problem_at_once`)."""
    return [
        {"type": e["type"], "loc": e["loc"], "input": e["input"], "ctx": e.get("ctx", {})}
        for e in exc.errors()
    ]


def _url_host(url: str) -> str:
    """The host `url` names ("" when none: `https://`, `https://:443`, or not a URL)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
