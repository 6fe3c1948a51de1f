"""Report pages (finance, admin): tables, SVG charts and CSV downloads."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Annotated

from babel.numbers import format_percent
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from simcharge.api.deps import DB, AppSettings
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.deps import require_web
from simcharge.backoffice.forms import form_error
from simcharge.backoffice.reports import (
    bar_chart,
    conversion,
    failures,
    lines_by_state,
    period,
    report_csv,
    report_rows,
    topup_totals,
    topups,
    trial_balance,
    zone_of,
)
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.web import HEADERS, language_of, render
from simcharge.backoffice.words import state_word
from simcharge.errors import ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import BABEL_LOCALES
from simcharge.kit.money import format_money, from_minor, minor_exponent
from simcharge.kit.translations import N_, translate

router = APIRouter(prefix="/backoffice", include_in_schema=False)
Finance = Annotated[Actor, require_web(Permission.reports_read)]
From = Annotated[str | None, Query(alias="from", max_length=10)]
To = Annotated[str | None, Query(alias="to", max_length=10)]


def _in(currency: str, language: str) -> Callable[[float], str]:
    """An amount of `currency` as the reader writes money (`format_money`)."""
    locale = BABEL_LOCALES.get(language, "en")
    return lambda v: format_money(round(v * 10 ** minor_exponent(currency)), currency, locale)


@router.get("/reports", response_class=HTMLResponse)
async def reports(
    request: Request,
    db: DB,
    actor: Finance,
    settings: AppSettings,
    start: From = None,
    end: To = None,
) -> HTMLResponse:
    zone = zone_of(settings)
    try:
        p = period(start, end, utcnow().astimezone(zone).date(), zone)
    except ValidationFailed as exc:
        # A bad period: the form again with what was typed and the error beside its field.
        typed = {"from": start or "", "to": end or ""}
        refused = form_error(request, actor, exc, form="report", values=typed)
        return render(
            request, "reports.html", actor, status=refused.status, form_error=refused,
            period=None, zone=zone.key,
        )  # fmt: skip
    language = language_of(request, actor)

    def tr(message: str) -> str:
        return translate(language, message)

    async with db.read() as s:
        top = await topups(s, p)
        conv = await conversion(s, p)
        fail = await failures(s, p)
        lines = await lines_by_state(s)
        books = await trial_balance(s, p)
    await audit.record_read(
        db, actor, "report.view", details={"from": p.start.isoformat(), "to": p.end.isoformat()}
    )
    per_currency: dict[str, dict[str, float]] = defaultdict(
        lambda: dict.fromkeys((d.isoformat() for d in p.days()), 0.0)
    )
    for row in top:
        per_currency[row.currency][row.day.isoformat()] += float(from_minor(row.net, row.currency))
    charts = [
        bar_chart(
            list(points.items()),
            title=tr(N_("Net top-ups per day ({currency})")).format(currency=currency),
            value_label=_in(currency, language),
            language=language,
        )
        for currency, points in sorted(per_currency.items())
    ]
    charts.append(
        bar_chart(
            [(r.day.isoformat(), r.rate * 100) for r in conv],
            title=tr(N_("Conversion (orders created → paid), %")),
            value_label=lambda v: format_percent(
                v / 100, locale=BABEL_LOCALES.get(language, "en")
            ),
            language=language,
        )
    )
    failed_per_day: dict[str, float] = dict.fromkeys((d.isoformat() for d in p.days()), 0.0)
    for f in fail:
        failed_per_day[f.day.isoformat()] += f.orders
    charts.append(
        bar_chart(
            list(failed_per_day.items()),
            title=tr(N_("Failed payments per day")),
            language=language,
        )
    )
    charts.append(
        bar_chart(
            [(state_word(language, "line", k), float(v)) for k, v in lines.items()],
            title=tr(N_("Lines by state")),
            language=language,
        )
    )
    return render(
        request,
        "reports.html",
        actor,
        period=p,
        topups=top,
        topup_totals=topup_totals(top),
        conversion=conv,
        failures=fail,
        lines=lines,
        books=books,
        zone=zone.key,
        charts=charts,
    )


@router.get("/reports/{name}.csv", response_model=None)
async def report_csv_page(
    name: str,
    db: DB,
    actor: Finance,
    settings: AppSettings,
    start: From = None,
    end: To = None,
) -> Response:
    zone = zone_of(settings)
    p = period(start, end, utcnow().astimezone(zone).date(), zone)
    async with db.read() as s:
        rows = await report_rows(s, name, p)
    await audit.record_read(
        db,
        actor,
        "report.export",
        details={"report": name, "from": p.start.isoformat(), "to": p.end.isoformat()},
    )
    text, disposition = report_csv(name, rows, p)
    return Response(
        text, media_type="text/csv; charset=utf-8", headers={**HEADERS, **disposition}
    )
