"""Small helpers the adapters share: HTTP calls with errors mapped, headers, JSON, secrets."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx

from simcharge.payments.providers.base import NotificationRejected, ProviderError

CHINA_TIME = timezone(timedelta(hours=8), "GMT+8")
"""Alipay's and WeChat Pay's wall clock (China has no daylight saving time)."""

SECRET_FIELDS = frozenset({"client_secret", "access_token", "refresh_token", "id_token"})
"""Members that hold a secret, wherever a provider puts them (Stripe's payment intents and
checkout sessions carry a `client_secret`; OAuth answers carry tokens)."""
_SECRET_KEYS = SECRET_FIELDS
_SECRET_MEMBER = re.compile(
    r'"(' + "|".join(sorted(SECRET_FIELDS)) + r')"(\s*):(\s*)"(?:[^"\\]|\\.)*"'
)
REMOVED = "[removed]"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name, from any mapping (Starlette's or a plain dict)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None


def scrub(value: Any) -> Any:
    """A copy without members that are secrets (client secrets, tokens), at any depth."""
    if isinstance(value, Mapping):
        return {k: scrub(v) for k, v in value.items() if k not in _SECRET_KEYS}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def delivered_body(body: bytes, *, blank_secrets: bool = False) -> str:
    """A notification's body as text, as delivered (every provider sends UTF-8). With
    `blank_secrets`, the string value of each JSON member named in `SECRET_FIELDS` becomes
    `"[removed]"`; every other byte stays as it was."""
    text = body.decode("utf-8", errors="backslashreplace")
    if blank_secrets:
        text = _SECRET_MEMBER.sub(lambda m: f'"{m[1]}"{m[2]}:{m[3]}"{REMOVED}"', text)
    return text


def delivered_headers(headers: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """The headers a notification's signature depends on (`names`) and its content type, by
    lower-case name, as delivered."""
    found = {}
    for name in (*names, "Content-Type"):
        value = header(headers, name)
        if value is not None:
            found[name.lower()] = value
    return found


def json_object(body: bytes | str) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def notification_json(body: bytes) -> dict[str, Any]:
    """A notification body as a JSON object, else `NotificationRejected("malformed")`."""
    value = json_object(body)
    if value is None:
        raise NotificationRejected("malformed", "the body is not a JSON object")
    return value


def dict_at(value: Mapping[str, Any], *path: str) -> dict[str, Any]:
    """The object at `path` inside nested objects, or an empty dict."""
    current: Any = value
    for key in path:
        current = current.get(key) if isinstance(current, Mapping) else None
    return dict(current) if isinstance(current, Mapping) else {}


def str_at(value: Mapping[str, Any], *path: str) -> str | None:
    """The string at `path`, or None (numbers are not strings)."""
    *parents, last = path
    found = dict_at(value, *parents).get(last) if parents else value.get(last)
    return found if isinstance(found, str) and found != "" else None


def transient_status(status: int) -> bool:
    """Whether an HTTP status says that trying again later may work."""
    return status >= 500 or status in (408, 409, 425, 429)


async def send(
    client: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    time_limit: float,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One HTTP request; a network failure or timeout becomes a transient `ProviderError`."""
    try:
        return await client.request(
            method, url, headers=headers, content=content, params=params, timeout=time_limit
        )
    except httpx.TimeoutException as exc:
        raise ProviderError(
            provider, "timeout", f"{method} {httpx.URL(url).path} timed out", transient=True
        ) from exc
    except httpx.HTTPError as exc:
        raise ProviderError(
            provider,
            "network_error",
            f"{method} {httpx.URL(url).path} failed: {type(exc).__name__}",
            transient=True,
        ) from exc


def parse_rfc3339(value: str | None) -> datetime | None:
    """An RFC 3339 time (`2025-01-01T18:05:12+08:00`, `…Z`) as aware UTC, or None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        # At the calendar's edges the offset can take it outside the calendar in UTC.
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


def parse_china_time(value: str | None) -> datetime | None:
    """Alipay's `yyyy-MM-dd HH:mm:ss` in GMT+8, as aware UTC, or None."""
    if not value:
        return None
    try:
        parsed = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007 - zone set below
        return parsed.replace(tzinfo=CHINA_TIME).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def epoch_seconds(value: str) -> int | None:
    """A Unix time in a header (`Wechatpay-Timestamp`, Stripe's `t=`): ASCII digits only (not
    `²`, which `str.isdigit` accepts), at most 12 of them (a float of it cannot overflow)."""
    if not (value.isascii() and value.isdigit() and len(value) <= 12):
        return None
    return int(value)


def china_time(moment: datetime) -> str:
    """`yyyy-MM-dd HH:mm:ss` in GMT+8, as Alipay expects."""
    return moment.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M:%S")
