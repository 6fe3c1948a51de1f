"""Naming the device behind a `User-Agent`: the browser and the system, from known tokens."""

from __future__ import annotations

_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"),
             ("Chrome/", "Chrome"), ("Chromium/", "Chromium"), ("Safari/", "Safari"))
_SYSTEMS = (("iPhone", "iPhone"), ("iPad", "iPad"), ("Android", "Android"),
            ("Windows", "Windows"), ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"),
            ("Linux", "Linux"))


def device_parts(user_agent: str | None) -> tuple[str | None, str | None]:
    """The browser and the system a user agent names among those we know ("Safari", "iPhone"),
    each None when it names none."""
    if not user_agent:
        return None, None
    browser = next((name for key, name in _BROWSERS if key in user_agent), None)
    system = next((name for key, name in _SYSTEMS if key in user_agent), None)
    return browser, system


def device_label(user_agent: str | None) -> str:
    """"Chrome · Linux" for a browser's user agent; the first characters of anything else (the
    portal's list of the customer's own sessions)."""
    if not user_agent:
        return "?"
    browser, system = device_parts(user_agent)
    if browser or system:
        return " · ".join(p for p in (browser, system) if p)
    return user_agent[:40]


def device_summary(user_agent: str | None) -> str:
    """What a message may say of a device: `device_label`'s "Safari · iPhone" built only from
    known tokens, else "" (the message then says "an unknown device" in its language) — never
    the header's own text. The header is chosen by whoever signed in, the very person a
    new-device alert warns about: in an SMS or e-mail sent under the operator's name, any of its
    words could pose as ours. At most 19 characters."""
    browser, system = device_parts(user_agent)
    return " · ".join(p for p in (browser, system) if p)
