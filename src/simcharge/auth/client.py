"""Who is on the other end of a request: address, user agent and device."""

from __future__ import annotations

from dataclasses import dataclass

from simcharge.kit.crypto import keyed_hash
from simcharge.kit.devices import device_summary


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
        """The header as the security log keeps it (cut at 255 characters)."""
        return self.user_agent[:255] if self.user_agent else None

    @property
    def device_summary(self) -> str:
        """What a message to the customer may say of the device ("Safari · iPhone", else "?"):
        never the header's own words, which whoever sent it chose."""
        return device_summary(self.user_agent)
