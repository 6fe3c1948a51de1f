"""Provider notifications (`POST /api/v1/webhooks/{provider}`) and the sandbox's hosted page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from simcharge.api.deps import API_PREFIX, DB, AppSettings
from simcharge.errors import NotFound
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import BABEL_LOCALES
from simcharge.kit.money import format_money
from simcharge.kit.translations import N_, translate
from simcharge.orders.endpoints import ProvidersDep
from simcharge.payments import sandbox
from simcharge.payments.webhooks import UnknownProvider, receive_notification

router = APIRouter(prefix=API_PREFIX, tags=["webhooks"])
sandbox_router = APIRouter(tags=["sandbox"], include_in_schema=False)

_pages = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    # The templates ship with the release: no stat of each file on every render.
    auto_reload=False,
    autoescape=select_autoescape(["html"]),
)


SANDBOX_CSS = Path(__file__).parent / "static" / "sandbox.css"
SANDBOX_CSP = (
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
"""The hosted page's own stylesheet (a file: no inline style); nothing else may load or run."""


class UnknownWebhook(NotFound):
    slug = "unknown-provider"
    title = N_("There is no such payment provider here.")


OUTCOME_HEADER = "Simcharge-Outcome"


@router.post(
    "/webhooks/{provider}",
    summary="A payment provider's notification",
    responses={
        200: {"description": "What the provider expects (`success`, JSON…)"},
        503: {"description": "It cannot be verified now (PayPal's certificate cannot be "
              "fetched): deliver it again after `Retry-After` seconds"},
    },
)
async def webhook(provider: str, request: Request, db: DB, providers: ProvidersDep) -> Response:
    """Verified (signature, time window, merchant), stored once per (provider, event id), then
    applied. A rejected notification changes nothing and gets the provider's failure answer.
    An accepted one's answer says what became of it in `Simcharge-Outcome` (`fulfilled`,
    `already`, `flagged`, `closed`, `unchanged`, `duplicate`, `stored`…), for operators and
    the bench; providers ignore it."""
    body = await request.body()
    try:
        received = await receive_notification(db, providers, provider, request.headers, body)
    except UnknownProvider as exc:
        raise UnknownWebhook(field="provider") from exc
    reply = received.reply
    response = Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)
    if received.outcome and not received.outcome.startswith("rejected:"):
        response.headers[OUTCOME_HEADER] = received.outcome
    return response


class SandboxPaymentNotFound(NotFound):
    slug = "sandbox-payment-not-found"
    title = N_("There is no such test payment.")


@sandbox_router.get("/sandbox/pay/{sandbox_id}", response_class=HTMLResponse)
async def sandbox_page(sandbox_id: str, db: DB, settings: AppSettings) -> HTMLResponse:
    row = await sandbox.find(db, sandbox_id)
    if row is None:
        raise SandboxPaymentNotFound(field="sandbox_id")
    language = row.language
    open_ = row.state == "open" and row.expires_at > utcnow()
    html = _pages.get_template("sandbox.html").render(
        lang=language,
        _=lambda m: translate(language, m),
        row=row,
        open=open_,
        amount=format_money(row.amount, row.currency, BABEL_LOCALES.get(language, "en")),
        token=sandbox.page_token(settings, row.id),
    )
    return HTMLResponse(
        html, headers={"cache-control": "no-store", "content-security-policy": SANDBOX_CSP}
    )


@sandbox_router.get("/sandbox/sandbox.css")
async def sandbox_style() -> FileResponse:
    return FileResponse(
        SANDBOX_CSS, media_type="text/css", headers={"cache-control": "public, max-age=300"}
    )


@sandbox_router.post("/sandbox/pay/{sandbox_id}")
async def sandbox_act(
    sandbox_id: str,
    db: DB,
    settings: AppSettings,
    action: Annotated[str, Form(max_length=10)],
    token: Annotated[str, Form(max_length=128)],
) -> Response:
    """The payer's choice; then back to the shop (the return URL, or the cancel URL)."""
    row = await sandbox.find(db, sandbox_id)
    if row is None or not sandbox.token_ok(settings, sandbox_id, token):
        raise SandboxPaymentNotFound(field="sandbox_id")
    try:
        row = await sandbox.act(db, settings, sandbox_id, action)
    except sandbox.SandboxActionRefused:
        return RedirectResponse(f"/sandbox/pay/{sandbox_id}", status_code=303)
    return RedirectResponse(
        row.cancel_url if action == "cancel" else row.return_url, status_code=303
    )
