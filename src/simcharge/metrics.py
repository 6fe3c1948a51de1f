"""Prometheus metrics: HTTP, and the business.

Counters and histograms are counted where things happen, per process. The levels that live in
the database (orders by state and method, the outbox) are gauges read from it when `/metrics`
is scraped (`refresh_levels`, at most once every `LEVELS_MAX_AGE` seconds per process), so they
are the same whichever process answers. With several web processes (`serve --workers N`),
`PROMETHEUS_MULTIPROC_DIR` names a directory shared by them (made when missing as this module is
imported, emptied by `serve` at start; a temporary one when it is unset): `/metrics` then adds
up every process's counters (prometheus_client's multiprocess mode). A `simcharge worker` serves
its own metrics (its jobs, its provider calls, and the fulfilment delay of the orders its
reconciliation credits) on `--metrics-port`.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def ensure_multiprocess_dir() -> Path | None:
    """Make `PROMETHEUS_MULTIPROC_DIR` when it is set and missing (readable by this user only,
    like `tempfile.mkdtemp`'s). Done when this module is imported, before its metrics exist: a
    metric without labels opens its file in that directory as it is made, and a directory
    missing there (`/tmp/metrics` in a fresh container) stopped `serve` and `worker` with
    FileNotFoundError before they could say anything."""
    given = os.environ.get(MULTIPROC_ENV)
    if not given:
        return None
    directory = Path(given)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


ensure_multiprocess_dir()

from prometheus_client import (  # noqa: E402 - after the directory it writes to is made
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client import multiprocess as _multiprocess  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from simcharge.kit.clock import utcnow  # noqa: E402

if TYPE_CHECKING:
    from threading import Thread
    from wsgiref.simple_server import WSGIServer

    from simcharge.db import Database

HTTP_REQUESTS = Counter(
    "simcharge_http_requests_total", "HTTP requests handled", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "simcharge_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LEDGER_TRANSFERS = Counter(
    "simcharge_ledger_transfers_total", "Ledger transfers by result", ["result"]
)
JOBS = Counter("simcharge_jobs_total", "Outbox jobs run, by kind and outcome", ["kind", "outcome"])
DB_RETRIES = Counter(
    "simcharge_db_retries_total",
    "Transactions run again after a deadlock, serialization failure, busy database or lost race",
    ["error"],
)
ORDERS = Counter(
    "simcharge_orders_total", "Orders by payment method and what happened", ["method", "event"]
)
WEBHOOKS = Counter(
    "simcharge_webhooks_total", "Provider notifications by provider and outcome",
    ["provider", "outcome"],
)
WEBHOOK_FAILURES = Counter(
    "simcharge_webhook_failures_total",
    "Provider notifications refused (bad signature, stale, foreign…) or whose processing failed",
    ["provider", "reason"],
)
FULFILMENT_DELAY = Histogram(
    "simcharge_order_fulfilment_delay_seconds",
    "From order creation to the line being credited",
    ["provider"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600),
)
CHARGING_REQUESTS = Counter(
    "simcharge_charging_requests_total",
    "Charging requests (reserve, commit, release, one-shot, batch) by result",
    ["operation", "result"],
)
PROVIDER_CALLS = Counter(
    "simcharge_provider_calls_total",
    "Calls to a payment provider's API by provider, call (create_checkout, query, close, "
    "refund, query_refund, capture) and outcome: ok, error (it answered, refusing or failing), "
    "unreachable (no answer: network error or timeout)",
    ["provider", "call", "outcome"],
)
ORDER_LEVELS = Gauge(
    "simcharge_orders_by_state",
    "Orders by state and payment method (read from the database at scrape time)",
    ["state", "method"],
    multiprocess_mode="mostrecent",
)
JOB_LEVELS = Gauge(
    "simcharge_outbox_jobs",
    "Outbox jobs by status (read from the database at scrape time)",
    ["status"],
    multiprocess_mode="mostrecent",
)
JOBS_DUE = Gauge(
    "simcharge_outbox_jobs_due",
    "Pending outbox jobs whose time has come: waiting for a worker",
    multiprocess_mode="mostrecent",
)
OLDEST_DUE = Gauge(
    "simcharge_outbox_oldest_due_seconds",
    "How long the oldest due job has waited (0: none waiting)",
    multiprocess_mode="mostrecent",
)

LEVELS_MAX_AGE = 5.0
_levels_read_at = float("-inf")
_order_pairs_shown: set[tuple[str, str]] = set()


async def refresh_levels(db: Database, *, max_age: float | None = None) -> None:
    """Read the gauges' values from the database, unless they were read less than `max_age`
    (default `LEVELS_MAX_AGE`) seconds ago in this process."""
    global _levels_read_at
    if time.monotonic() - _levels_read_at < (LEVELS_MAX_AGE if max_age is None else max_age):
        return
    from simcharge.orders.models import Order
    from simcharge.worker.models import JobStatus, OutboxJob

    now = utcnow()
    async with db.read() as s:
        orders = (
            await s.execute(
                select(Order.state, Order.method_code, func.count()).group_by(
                    Order.state, Order.method_code
                )
            )
        ).all()
        jobs = {
            status: int(n)
            for status, n in await s.execute(
                select(OutboxJob.status, func.count()).group_by(OutboxJob.status)
            )
        }
        due, oldest = (
            await s.execute(
                select(func.count(), func.min(OutboxJob.run_at)).where(
                    OutboxJob.status == JobStatus.pending.value, OutboxJob.run_at <= now
                )
            )
        ).one()
    # Not ORDER_LEVELS.clear(): a no-op in multiprocess mode. A pair gone from the database
    # (its last order moved on) is shown as 0 instead.
    levels = {(state, method): int(n) for state, method, n in orders}
    for pair in _order_pairs_shown - levels.keys():
        ORDER_LEVELS.labels(*pair).set(0)
    for (state, method), n in levels.items():
        ORDER_LEVELS.labels(state, method).set(n)
    _order_pairs_shown.update(levels)
    for status in JobStatus:
        JOB_LEVELS.labels(status.value).set(jobs.get(status.value, 0))
    JOBS_DUE.set(due)
    if oldest is not None and oldest.tzinfo is None:  # SQLite gives naive UTC
        oldest = oldest.replace(tzinfo=UTC)
    OLDEST_DUE.set(max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
    _levels_read_at = time.monotonic()


def _registry() -> CollectorRegistry:
    """This process's metrics, or every process's in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    """The metrics text: this process's, or every process's in multiprocess mode."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def prepare_multiprocess(processes: int) -> Path | None:
    """Before the web processes start (in their parent): empty the `PROMETHEUS_MULTIPROC_DIR`
    they will share — files left by an earlier run would add its counts to this one's — or,
    when it is unset and there will be several processes, make a temporary one and set it, so
    that `/metrics` adds up all of them whichever answers. Returns the directory in use."""
    given = os.environ.get(MULTIPROC_ENV)
    if not given:
        if processes <= 1:
            return None
        made = Path(tempfile.mkdtemp(prefix="simcharge-metrics-"))
        os.environ[MULTIPROC_ENV] = str(made)
        return made
    directory = ensure_multiprocess_dir() or Path(given)
    for entry in directory.glob("*.db"):  # prometheus_client's files only, nothing else
        entry.unlink(missing_ok=True)
    return directory


def serve_metrics(port: int, host: str) -> tuple[WSGIServer, Thread]:
    """Serve `/metrics` of this process (a worker's) on `host:port`, in a thread."""
    return start_http_server(port, addr=host, registry=_registry())
