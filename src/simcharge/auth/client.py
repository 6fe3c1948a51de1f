"""Who is on the other end of a request: address, user agent and device."""

from __future__ import annotations

from dataclasses import dataclass

from simcharge.kit.crypto import keyed_hash


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str | None = None
    user_agent: str | None = None
    device_id: str | None = None
    """The browser's long-lived `sc_device` cookie, or an API client's `X-Device-Id` header."""

    def device_hash(self, secret: str) -> str:
        basis = f"id:{self.device_id}" if self.device_id else f"ua:{self.user_agent or ''}"
        return keyed_hash(secret, "device", basis)

    @property
    def short_user_agent(self) -> str | None:
        return self.user_agent[:255] if self.user_agent else None
