"""Prometheus metrics: HTTP, and the business (later issues add theirs here)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
FULFILMENT_DELAY = Histogram(
    "simcharge_order_fulfilment_delay_seconds",
    "From order creation to the line being credited",
    ["provider"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600),
)
