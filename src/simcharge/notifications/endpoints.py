"""`/dev/mailbox`: in development only, the e-mails and SMS the server has sent."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from simcharge.notifications.transports import dev_mailbox

dev_router = APIRouter(prefix="/dev", tags=["development"], include_in_schema=False)


@dev_router.get("/mailbox.json")
async def mailbox_json() -> list[dict[str, str | None]]:
    return [
        {
            "channel": m.channel,
            "to": m.to,
            "subject": m.subject,
            "text": m.text,
            "at": m.at.isoformat(),
        }
        for m in reversed(dev_mailbox)
    ]


@dev_router.get("/mailbox", response_class=HTMLResponse)
async def mailbox() -> HTMLResponse:
    rows = (
        "".join(
            f"<article><h2>{escape(m.subject or 'SMS')}</h2>"
            f"<p class=meta>{escape(m.channel)} to {escape(m.to)} — {escape(m.at.isoformat())}</p>"
            f"<pre>{escape(m.text)}</pre></article>"
            for m in reversed(dev_mailbox)
        )
        or "<p>Nothing sent yet.</p>"
    )
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'><title>Development mailbox</title>"
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:760px;margin:2rem auto;"
        "padding:0 1rem}article{border:1px solid #ccd;border-radius:6px;padding:0 1rem;"
        "margin:1rem 0}.meta{color:#556}pre{white-space:pre-wrap}</style></head><body>"
        "<h1>Development mailbox</h1><p>E-mails and SMS sent by this process (development "
        "only; nothing here in production).</p>" + rows + "</body></html>"
    )
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": "default-src 'none'; "
            "style-src 'unsafe-inline'; frame-ancestors 'none'"
        },
    )
