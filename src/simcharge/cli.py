"""The `simcharge` command."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import uvloop
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.exc import DBAPIError

from simcharge.config import Environment, Settings, get_settings, settings_problems
from simcharge.db import Database, Timeouts

T = TypeVar("T")

app = typer.Typer(
    help="simcharge: a platform for a prepaid eSIM operator.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
catalog_app = typer.Typer(
    help="The catalog of plans, payment methods and zones.", no_args_is_help=True
)
lines_app = typer.Typer(help="The operator's lines (SIM inventory).", no_args_is_help=True)
apikey_app = typer.Typer(
    help="API keys for the operator's tools and integrations.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
app.add_typer(lines_app, name="lines")
ledger_app = typer.Typer(help="The double-entry ledger.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
app.add_typer(ledger_app, name="ledger")
usage_app = typer.Typer(help="Usage records (offline charging).", no_args_is_help=True)
app.add_typer(usage_app, name="usage")
staff_app = typer.Typer(help="Back-office staff users.", no_args_is_help=True)
app.add_typer(staff_app, name="staff")
staff_passkeys_app = typer.Typer(
    help="A staff member's passkeys: see them, remove one or all (a lost device).",
    no_args_is_help=True,
)
staff_app.add_typer(staff_passkeys_app, name="passkeys")
receipts_app = typer.Typer(help="Receipts and credit notes.", no_args_is_help=True)
app.add_typer(receipts_app, name="receipts")
privacy_app = typer.Typer(help="Customers' personal data.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
secrets_app = typer.Typer(
    help="The secret key ring (SIMCHARGE_SECRET_KEY, SIMCHARGE_SECRET_KEY_PREVIOUS).",
    no_args_is_help=True,
)
app.add_typer(secrets_app, name="secrets")


def _database(settings: Settings) -> Database:
    # Every table's mapper, whatever the command imported: a model naming another's table
    # (`lines.account_id` → `accounts`) cannot be used alone (sixteenth round: `lines import`
    # in a process of its own stopped with NoReferencedTableError).
    import simcharge.models  # noqa: F401

    # Connecting is bounded; a statement is not (migrations, imports, sweeps run long).
    return Database.from_url(
        settings.database_url, pool_size=settings.db_pool_size,
        timeouts=Timeouts.for_commands(settings),
    )


def _run(fn: Callable[[Database], Awaitable[T]], *, said: bool = True) -> T:
    """Run `fn` with a database for this command, then close it (on uvloop, as the server).
    `said`: a database that cannot be reached, or a port taken, ends the command with one line
    (else the caller says it its own way)."""
    settings = get_settings()

    async def main() -> T:
        db = _database(settings)
        try:
            return await fn(db)
        finally:
            await db.dispose()

    if not said:
        return uvloop.run(main())
    try:
        return uvloop.run(main())
    except (OSError, DBAPIError) as exc:
        # The database cannot be reached (or refused what was asked), a port is taken: one
        # line saying so, never a traceback (nor the database URL, which may hold a password).
        _fail(f"simcharge: {_briefly(exc)}", 1)


def _warn_of_sqlite_in_production(settings: Settings) -> None:
    """Allowed (a tiny deployment, one process) but said at every start: SQLite takes one
    writer at a time, for the web and the worker together, and lives on this host's disk."""
    if settings.env is Environment.production and settings.is_sqlite:
        import structlog

        structlog.get_logger("simcharge.config").warning(
            "config.sqlite_in_production",
            detail="SQLite serves one process on one host; use PostgreSQL for more "
            "(see README, Running on PostgreSQL)",
        )


def _warn_without_privacy_notice(settings: Settings) -> None:
    """Customers must be told how their data is used (GDPR art. 13, Philippine DPA sec. 16):
    in production, a site without SIMCHARGE_PRIVACY_NOTICE_URL is said at every start."""
    if settings.env is Environment.production and settings.privacy_notice_url is None:
        import structlog

        structlog.get_logger("simcharge.config").warning(
            "config.no_privacy_notice",
            detail="no privacy notice is linked from the portal, the registration form or the "
            "e-mails; set SIMCHARGE_PRIVACY_NOTICE_URL (see README, Data retention)",
        )


def _check_rate_limits_with_workers(settings: Settings, workers: int) -> None:
    """Without Redis each web process keeps its own rate-limit counts, so `workers` processes
    let every address and account try `workers` times as often. Said at start; refused in
    production, where the limits are a security control (ASVS 2.2.1): set
    SIMCHARGE_REDIS_URL, or serve one process."""
    if workers == 1 or settings.redis_url:
        return
    if settings.env is Environment.production:
        _fail(
            f"simcharge: --workers {workers} without SIMCHARGE_REDIS_URL would multiply every "
            "rate limit by the number of processes; set SIMCHARGE_REDIS_URL, or use --workers 1",
            2,
        )
    import structlog

    structlog.get_logger("simcharge.config").warning(
        "config.memory_rate_limits_with_workers",
        workers=workers,
        detail="without SIMCHARGE_REDIS_URL each web process counts the rate limits on its "
        "own: every limit is multiplied by the number of processes",
    )


def _check_operator_zone_in_database(settings: Settings) -> None:
    """The reports count the operator's days in PostgreSQL by its own copy of the time zone
    database (`backoffice.reports._local_day`). The setting was checked against Python's at
    start; a PostgreSQL older than the zone (one created after its tzdata) would refuse every
    report. So at start: a PostgreSQL that does not know the zone stops the start in one line.
    A database that cannot be reached now is not this check's to judge (`/readyz` says it)."""
    if settings.is_sqlite or settings.operator_timezone == "UTC":
        return
    from sqlalchemy import text

    async def known(db: Database) -> bool:
        async with db.read() as s:
            found = await s.execute(
                text("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = :zone)"),
                {"zone": settings.operator_timezone},
            )
            return bool(found.scalar())

    try:
        knows = _run(known, said=False)
    except (OSError, DBAPIError):
        return
    if not knows:
        _fail(
            f"simcharge: PostgreSQL does not know the time zone {settings.operator_timezone!r} "
            "(SIMCHARGE_OPERATOR_TIMEZONE): update its time zone data (tzdata) or choose a zone "
            "it knows (the view pg_timezone_names lists them)",
            2,
        )


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _briefly(exc: BaseException) -> str:
    """An error in one line: a database's by its driver's kind and first line."""
    if isinstance(exc, DBAPIError):
        cause = exc.orig if exc.orig is not None else exc
        first = str(cause).splitlines()[0] if str(cause) else ""
        return f"the database: {type(cause).__name__}: {first}"[:300]
    if isinstance(exc, TimeoutError):
        return "the database did not answer in time (SIMCHARGE_DB_CONNECT_TIMEOUT_SECONDS)"
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        # Where and what, never the URL itself (it may hold a password).
        why = exc.strerror or str(exc)
        return f"cannot reach the database (SIMCHARGE_DATABASE_URL): {why}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


def _refuse_taken_port(host: str, port: int) -> None:
    """A port taken (or an address not of this host) stops `serve` in one line, exit 1, with
    one web process or several (uvicorn alone would exit 3, the dispatcher with a traceback)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as both servers do
        try:
            probe.bind((host, port))
        except OSError as exc:
            _fail(f"simcharge: cannot listen on {host}:{port}: {exc.strerror or exc}", 1)


def _from_env_file(name: str) -> str | None:
    """`name` as the `.env` the settings read has it (None: no such file, or not in it), for a
    command's option that is not a setting (`PORT`, `SIMCHARGE_WORKER_METRICS_PORT`): the
    environment itself comes first (Typer's `envvar`), then `.env`, as for the settings."""
    from dotenv import dotenv_values

    env_file = Settings.model_config.get("env_file")
    if not isinstance(env_file, str | Path) or not Path(env_file).is_file():
        return None
    value = dotenv_values(env_file, encoding="utf-8").get(name)
    return value.strip() or None if value else None


def _port_from_env_file(name: str, default: int | None) -> int | None:
    raw = _from_env_file(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 65535:
        _fail(f"simcharge: {name} in .env is not a port (1-65535)", 2)
    return int(raw)


def _say_when_listening(host: str, port: int, workers: int) -> Callable[[], None]:
    """Log `server.listening` (JSON in production) once the port takes connections: a thread
    connects until it does, and closes at once without a request (nothing for the app to answer,
    log or count). The port was free (`_refuse_taken_port`): what listens there now is the
    server — uvicorn after its startup, with several processes the dispatcher, which holds the
    connections until every process has started. uvicorn's own line is at INFO, which `serve`
    keeps quiet. Returns what stops the connecting (the server stopped before listening)."""
    import threading

    import structlog

    near = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - a mapping
    stop = threading.Event()

    def connect() -> None:
        while not stop.is_set():
            try:
                socket.create_connection((near, port), timeout=2).close()
            except OSError:
                stop.wait(0.1)
                continue
            structlog.get_logger("simcharge.serve").info(
                "server.listening", host=host, port=port, workers=workers
            )
            return

    threading.Thread(target=connect, name="simcharge-listening", daemon=True).start()
    return stop.set


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            envvar="PORT", min=1, max=65535,
            help="Port (default: $PORT, else PORT in .env, else 8000).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Web processes.")] = 1,
    proxy_headers: Annotated[
        bool, typer.Option(help="Trust X-Forwarded-* from the proxy.")
    ] = False,
    graceful_seconds: Annotated[
        int, typer.Option(min=1, help="On SIGTERM, how long open requests may finish.")
    ] = 30,
) -> None:
    """Serve the website and API (with an in-process worker unless SIMCHARGE_WORKER_IN_PROCESS=false).

    With several web processes, each connection goes to the one with the fewest open connections.

    With several web processes, /metrics adds up all of them: PROMETHEUS_MULTIPROC_DIR (emptied at start) or, unset, a temporary directory.
    """  # noqa: E501 - Typer shows each paragraph as written: one line each
    import uvicorn

    from simcharge.kit.logging import configure_logging
    from simcharge.metrics import prepare_multiprocess

    settings = get_settings()
    if port is None:
        port = _port_from_env_file("PORT", 8000) or 8000
    # uvicorn's own records go through our handler (JSON in production), not its formatters.
    configure_logging(settings.log_level, json=settings.log_json)
    _warn_of_sqlite_in_production(settings)
    _warn_without_privacy_notice(settings)
    _check_rate_limits_with_workers(settings, workers)
    _check_operator_zone_in_database(settings)
    _refuse_taken_port(host, port)
    # Before uvicorn starts the processes: they inherit the directory and count into it.
    prepare_multiprocess(workers)

    options: dict[str, Any] = {
        "factory": True,
        "proxy_headers": proxy_headers,
        "timeout_graceful_shutdown": graceful_seconds,
        "access_log": False,
        "log_config": None,
        "log_level": "warning",
    }
    stop_asking = _say_when_listening(host, port, workers)
    try:
        if workers == 1:
            uvicorn.run("simcharge.app:serve_app", host=host, port=port, **options)
            return
        # Several: each connection to the least loaded process (see simcharge.kit.dispatch).
        from simcharge.kit import dispatch

        status = dispatch.serve(
            "simcharge.app:serve_app", host=host, port=port, processes=workers, **options
        )
    finally:
        stop_asking()
    if status:
        raise typer.Exit(status)


@app.command()
def worker(
    concurrency: Annotated[
        int,
        typer.Option(min=1, help="Jobs run at once (most wait on the network: providers, SMTP)."),
    ] = 10,
    drain: Annotated[bool, typer.Option(help="Run what is due now, then exit.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar="SIMCHARGE_WORKER_METRICS_PORT", min=1, max=65535,
            help="Serve this worker's Prometheus metrics (jobs run, fulfilment delay of the "
            "orders it credits) at http://HOST:PORT/metrics. Default: not served.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Interface for --metrics-port.")
    ] = "127.0.0.1",
) -> None:
    """Run outbox jobs (e-mails, provider calls, sweeps) until stopped with SIGTERM or Ctrl-C.

    On SIGTERM nothing more is claimed, the jobs in hand get SIMCHARGE_WORKER_SHUTDOWN_GRACE_SECONDS to finish, the rest go back to the queue, and the exit status is 0.
    """  # noqa: E501 - Typer shows each paragraph as written: one line each
    from simcharge.kit.logging import configure_logging
    from simcharge.metrics import serve_metrics
    from simcharge.worker.runner import Worker

    settings = get_settings()
    if metrics_port is None:
        metrics_port = _port_from_env_file("SIMCHARGE_WORKER_METRICS_PORT", None)
    configure_logging(settings.log_level, json=settings.log_json)
    _warn_of_sqlite_in_production(settings)
    _check_operator_zone_in_database(settings)

    async def work(db: Database) -> None:
        w = Worker(db, settings, concurrency=concurrency)
        if drain:
            await w.schedule_periodic()
            n = await w.drain()
            typer.echo(f"ran {n} job(s)")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = serve_metrics(metrics_port, metrics_host)[0] if metrics_port else None
        try:
            await w.run(stop)
        finally:
            if server is not None:
                await asyncio.to_thread(server.shutdown)
                server.server_close()

    _run(work)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from simcharge import migrate

    async def up(db: Database) -> str | None:
        await migrate.upgrade(db.engine, revision)
        return await migrate.current_revision(db.engine)

    if revision != "head" and not migrate.known_revision(revision):
        _fail(f"no migration {revision!r} in this release", 2)
    try:
        typer.echo(f"database at revision {_run(up)}")
    except migrate.BehindPooler as exc:
        _fail(f"simcharge: {exc}", 1)
    except migrate.NewerSchema as exc:
        # The previous image, redeployed to roll back: its web and worker run on the newer
        # schema (migrations only add what an older release can run beside).
        typer.echo(
            f"database at revision {exc.revision}, newer than this release's "
            f"{migrate.head_revision()}: nothing to apply"
        )


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[
        str,
        typer.Argument(
            help="The revision to go back to (`simcharge db current` shows where the database "
            "is; the README's upgrade notes name each migration)."
        ),
    ],
) -> None:
    """Undo migrations down to REVISION (stop the web and the worker first; back up first)."""
    from simcharge import migrate

    async def down(db: Database) -> str | None:
        await migrate.downgrade(db.engine, revision)
        return await migrate.current_revision(db.engine)

    if revision in {"head", "heads", "base"} or revision.startswith(("-", "+")) or (
        not migrate.known_revision(revision)
    ):
        # `base` would drop every table, a relative step depends on where the database is:
        # name the revision to land on.
        _fail(
            f"no migration {revision!r} in this release: name the revision to go back to "
            f"(this release's newest is {migrate.head_revision()})",
            2,
        )
    try:
        typer.echo(f"database at revision {_run(down)}")
    except migrate.BehindPooler as exc:
        _fail(f"simcharge: {str(exc).replace('db upgrade', 'db downgrade')}", 1)


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and the newest one available."""
    from simcharge import migrate

    current = _run(lambda db: migrate.current_revision(db.engine))
    head = migrate.head_revision()
    typer.echo(f"current: {current}\nhead:    {head}")
    if current != head:
        raise typer.Exit(1)


@catalog_app.command("load")
def catalog_load(
    file: Annotated[
        Path, typer.Argument(help="A catalog TOML file (see src/simcharge/catalog/demo.toml).")
    ],
    dry_run: Annotated[
        bool, typer.Option(help="Validate and show the changes, store nothing.")
    ] = False,
) -> None:
    """Make the catalog match FILE. Plans and methods not in FILE are retired, not deleted."""
    from simcharge.catalog.service import (
        CatalogInvalid,
        LoadReport,
        load_catalog,
        read_catalog_file,
    )

    try:
        catalog = read_catalog_file(file)
    except CatalogInvalid as exc:
        _fail(str(exc), 2)
        return

    async def load(db: Database) -> LoadReport:
        async with db.transaction() as session:
            report = await load_catalog(session, catalog)
            if dry_run:
                await session.rollback()
            return report

    report = _run(load)
    for label, items in (
        ("created", report.created),
        ("updated", report.updated),
        ("retired", report.retired),
    ):
        for item in items:
            typer.echo(f"{label:8} {item}")
    typer.echo(
        f"{len(report.unchanged)} unchanged" + (" (dry run: nothing stored)" if dry_run else "")
    )


@catalog_app.command("check")
def catalog_check(file: Annotated[Path, typer.Argument(help="A catalog TOML file.")]) -> None:
    """Validate FILE without touching the database."""
    from simcharge.catalog.service import CatalogInvalid, read_catalog_file

    try:
        c = read_catalog_file(file)
    except CatalogInvalid as exc:
        _fail(str(exc), 2)
        return
    typer.echo(
        f"{file}: ok ({len(c.plans)} plans, {len(c.payment_methods)} methods, {len(c.zones)} zones)"
    )


@lines_app.command("import")
def lines_import(
    file: Annotated[
        Path,
        typer.Argument(help="CSV with columns msisdn, iccid, activation_code[, imsi][, currency]."),
    ],
    currency: Annotated[
        str | None, typer.Option(help="Wallet currency when the CSV has none.")
    ] = None,
) -> None:
    """Add SIMs to the inventory. Rows already imported are left alone; any error imports nothing."""
    from simcharge.errors import FieldError
    from simcharge.lines.service import ImportReport, import_lines, parse_inventory_csv

    settings = get_settings()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"{file}: cannot read the file: {exc.strerror}", 2)
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[: exc.start].count(b"\n") + 1
        _fail(f"{file}: line {line}: not UTF-8 (save it as UTF-8); nothing imported", 2)
    parsed, errors = parse_inventory_csv(
        text, default_currency=(currency or settings.default_currency).upper()
    )

    def show(errs: list[FieldError]) -> None:
        for e in errs:
            typer.secho(
                f"{file}: {e.field}: {e.detail.format(**e.params)}", fg=typer.colors.RED, err=True
            )

    if errors:
        show(errors)
        _fail(f"{len(errors)} error(s); nothing imported", 2)

    async def load(db: Database) -> ImportReport:
        async with db.transaction() as session:
            report = await import_lines(session, parsed)
            if report.errors:
                await session.rollback()
            return report

    report = _run(load)
    if report.errors:
        show(report.errors)
        _fail(f"{len(report.errors)} error(s); nothing imported", 2)
    typer.echo(f"{len(report.created)} line(s) imported, {len(report.unchanged)} already present")


@app.command()
def demo() -> None:
    """Load the demo catalog, customers, lines and balances (again: no change), and print the logins."""
    from simcharge.demo import DEMO_PASSWORD, DemoCustomer, load_demo

    async def load(db: Database) -> list[DemoCustomer]:
        async with db.transaction() as session:
            return await load_demo(session)

    settings = get_settings()
    if settings.env is Environment.production:
        # Customers with a password printed in the code, and the demo catalog in place of the
        # operator's (plans not in it retired): never on a production database.
        _fail(
            "simcharge demo: refused in production (SIMCHARGE_ENV=production); load your "
            "catalog with `simcharge catalog load FILE` and your SIMs with `simcharge lines "
            "import FILE`",
            2,
        )
    customers = _run(load)
    typer.echo(f"\nDemo logins at {settings.base_url} (password for all: {DEMO_PASSWORD})")
    for c in customers:
        typer.echo(f"  {c.username:8} {c.language:8} lines: {', '.join(c.msisdns)}")
    typer.echo("")


@app.command(
    "receipt-fonts",
    help="Make the receipts' common font subsets now, in SIMCHARGE_FONT_CACHE_DIR (else the "
    "first receipt that needs one makes it: about 15 s for the CJK one).",
)
def receipt_fonts() -> None:
    from simcharge.orders.receipt_fonts import SUBSETS, make_all

    made = make_all()
    for path in made:
        typer.echo(str(path))
    if len(made) < len(SUBSETS):
        _fail(f"{len(SUBSETS) - len(made)} subset(s) not made (see the log)", 1)


@ledger_app.command(
    "verify",
    help="Check the books: every balance equals its transfers, each unit sums to zero, no "
    "bound crossed, every account a transfer names exists, every post, void and expiry agrees "
    "with its reservation. Exits 1 on any violation (read-only). Reservations past their "
    "timeout are counted, not violations: the sweep releases them on its next run.",
)
def ledger_verify() -> None:
    from simcharge.ledger.audit import LedgerReport, verify_ledger

    async def check(db: Database) -> LedgerReport:
        async with db.read() as session:
            return await verify_ledger(session)

    report = _run(check)
    typer.echo(f"{report.accounts} accounts, {report.transfers} transfers")
    for unit, (posted, pending) in sorted(report.units.items()):
        typer.echo(f"  {unit:8} posted {posted:+d}  pending {pending:+d}")
    typer.echo(
        f"open reservations: {report.open_reservations} "
        f"(past their timeout: {report.overdue_reservations})"
    )
    if not report.ok:
        for v in report.violations:
            typer.secho(f"  VIOLATION {v}", fg=typer.colors.RED, err=True)
        _fail(f"{len(report.violations)} violation(s)", 1)
    typer.echo("the ledger balances")


_EXPIRES_IN_HELP = "Expire after this long: 30m, 24h, 90d, 2w (minutes, hours, days, weeks)."
_EXPIRES_AT_HELP = "Expire at this moment (ISO 8601 with its offset: 2027-03-01T00:00:00Z)."


def _key_expiry(expires_in: str | None, expires_at: str | None) -> datetime | None:
    """The end `--expires-in` or `--expires-at` asks for (None: never), or bad input (exit 2)."""
    from simcharge.auth.apikeys import expiry_after, parse_duration, parse_moment
    from simcharge.kit.clock import utcnow

    if expires_in is not None and expires_at is not None:
        _fail("simcharge: give --expires-in or --expires-at, not both", 2)
    if expires_in is not None:
        lifetime = parse_duration(expires_in, field="expires_in")
        return expiry_after(utcnow(), lifetime, field="expires_in")
    if expires_at is not None:
        return parse_moment(expires_at, field="expires_at")
    return None


def _key_refusal(exc: Any) -> str:
    """A refused API key command's line: the option named when one was wrong."""
    options = {"expires_in": "--expires-in", "expires_at": "--expires-at", "overlap": "--overlap"}
    option = options.get(exc.field or "")
    return f"{option}: {exc.detail}" if option else str(exc.detail)


def _moment(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "never"


_KEY_ARGUMENT = (
    "The key: as issued (sck_<prefix>_<secret>), or its prefix with or without sck_ (as "
    "`apikey list` shows it)."
)
_PREFIX = re.compile(r"[0-9a-f]{12}")


def _key_prefix(given: str) -> str:
    """The stored prefix of the key an operator names: the whole key, `sck_<prefix>`, or the
    prefix (what `apikey list` shows)."""
    return given.strip().removeprefix("sck_").split("_", 1)[0].lower()


def _key_named(prefix: str) -> str:
    """A key as a message names it: its prefix, as `apikey list` shows it, never more (a
    secret pasted by mistake is not echoed, not even its first part)."""
    return prefix if _PREFIX.fullmatch(prefix) else "(give the key as issued, or its prefix)"


async def _not_live(session: Any, prefix: str) -> str:
    """Why the key `prefix` cannot be rotated or revoked: none has that prefix, or it was
    revoked, or it expired (replaced by a rotation, when it was)."""
    from sqlalchemy import select

    from simcharge.auth.apikeys import key_view
    from simcharge.auth.models import ApiKey
    from simcharge.kit.clock import utcnow

    named = _key_named(prefix)
    key = (
        await session.execute(select(ApiKey).where(ApiKey.prefix == prefix))
    ).scalar_one_or_none() if _PREFIX.fullmatch(prefix) else None
    if key is None:
        return f"no such key {named}; `simcharge apikey list` shows every key's prefix"
    view = await key_view(session, key, utcnow())
    replaced = f"it was replaced by {view.replaced_by} and " if view.replaced_by else "it "
    if view.revoked_at is not None:
        return f"no live key {named}: {replaced}was revoked at {_moment(view.revoked_at)}"
    return f"no live key {named}: {replaced}expired at {_moment(view.expires_at)}"


@apikey_app.command(
    "create",
    help="Create an API key and print it (once: only its hash is kept). Without --expires-in "
    "or --expires-at it lives until revoked.",
)
def apikey_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    scope: Annotated[list[str], typer.Option(help="A scope; repeat for more.")],
    expires_in: Annotated[str | None, typer.Option(help=_EXPIRES_IN_HELP)] = None,
    expires_at: Annotated[str | None, typer.Option(help=_EXPIRES_AT_HELP)] = None,
) -> None:
    from simcharge.auth.apikeys import create_api_key
    from simcharge.backoffice import audit
    from simcharge.errors import SimchargeError

    async def create(db: Database) -> str:
        async with db.transaction() as session:
            issued = await create_api_key(session, name, scope, expires_at=ends)
            after: dict[str, Any] = {"name": issued.key.name, "scopes": issued.key.scopes}
            if ends is not None:
                after["expires_at"] = ends
            await audit.record(
                session,
                audit.command_line_actor("apikey create"),
                "apikey.create",
                target_type="api_key",
                target_id=issued.key.prefix,
                after=after,
            )
            return issued.token

    try:
        ends = _key_expiry(expires_in, expires_at)
        token = _run(create)
    except SimchargeError as exc:
        _fail(_key_refusal(exc), 2)
        return
    typer.echo(token)


@apikey_app.command(
    "list",
    help="List every API key, the newest first: prefix, name, state (live, expired, revoked), "
    "when it expires, when it was last used (to within minutes) and its scopes. Never a secret.",
)
def apikey_list() -> None:
    from simcharge.auth.apikeys import key_state, list_api_keys
    from simcharge.kit.clock import utcnow

    async def read(db: Database) -> list[Any]:
        async with db.read() as session:
            return list(await list_api_keys(session))

    keys = _run(read)
    now = utcnow()
    rows = [("PREFIX", "NAME", "STATE", "EXPIRES", "LAST USED", "SCOPES")]
    rows += [
        (k.prefix, k.name, key_state(k, now), _moment(k.expires_at), _moment(k.last_used_at),
         ",".join(k.scopes))
        for k in keys
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5])


@apikey_app.command(
    "rotate",
    help="Make a new key with the same name and scopes and print it (once); the old one "
    "expires after --overlap. The new key expires as asked, else after the old key's lifetime "
    "if it had one.",
)
def apikey_rotate(
    key: Annotated[str, typer.Argument(metavar="KEY", help=_KEY_ARGUMENT)],
    overlap: Annotated[
        str, typer.Option(help="How long the old key keeps working beside the new one.")
    ] = "24h",
    expires_in: Annotated[str | None, typer.Option(help=_EXPIRES_IN_HELP)] = None,
    expires_at: Annotated[str | None, typer.Option(help=_EXPIRES_AT_HELP)] = None,
) -> None:
    from simcharge.auth.apikeys import parse_duration, refuse_replaced, rotate_api_key
    from simcharge.backoffice import audit
    from simcharge.errors import SimchargeError

    prefix = _key_prefix(key)

    async def rotate(db: Database) -> tuple[str, datetime | None] | str:
        actor = audit.command_line_actor("apikey rotate")
        async with db.transaction() as session:
            rotated = await rotate_api_key(session, prefix, overlap=grace, expires_at=ends)
            if rotated is None:
                return await _not_live(session, prefix)
            await refuse_replaced(session, prefix)  # one successor a key, as staff's rotation
            new = rotated.issued.key
            after: dict[str, Any] = {"name": new.name, "scopes": new.scopes,
                                     "rotated_from": prefix}
            if new.expires_at is not None:
                after["expires_at"] = new.expires_at
            await audit.record(session, actor, "apikey.create", target_type="api_key",
                               target_id=new.prefix, after=after)
            await audit.record(
                session, actor, "apikey.rotate", target_type="api_key", target_id=prefix,
                before={"expires_at": rotated.old_expires_before},
                after={"expires_at": rotated.old.expires_at, "replaced_by": new.prefix},
            )
            return rotated.issued.token, rotated.old.expires_at

    try:
        grace = parse_duration(overlap, field="overlap")
        ends = _key_expiry(expires_in, expires_at)
        done = _run(rotate)
    except SimchargeError as exc:
        _fail(_key_refusal(exc), 2)
        return
    if isinstance(done, str):
        _fail(done, 1)
    token, old_ends = done
    typer.echo(token)
    typer.echo(f"the key {_key_named(prefix)} expires at {_moment(old_ends)}", err=True)


@apikey_app.command("revoke")
def apikey_revoke(
    key: Annotated[str, typer.Argument(metavar="KEY", help=_KEY_ARGUMENT)],
) -> None:
    """Revoke an API key at once (an expired one too); audited with its state before."""
    from simcharge.auth.apikeys import ApiKeyNotFound, staff_revoke_api_key
    from simcharge.backoffice import audit

    prefix = _key_prefix(key)

    async def revoke(db: Database) -> str | None:
        async with db.transaction() as session:
            actor = audit.command_line_actor("apikey revoke")
            try:
                await staff_revoke_api_key(session, actor, prefix)
            except ApiKeyNotFound:
                return await _not_live(session, prefix)
            return None

    refused = _run(revoke)
    if refused is not None:
        _fail(refused, 1)
    typer.echo(f"revoked {_key_named(prefix)}")



def _staff_password(typed: str | None, prompt: str) -> str:
    """A staff member's new password: from `SIMCHARGE_STAFF_PASSWORD`, else typed twice at a
    hidden prompt — never from the command line, where `ps` and the shell history show it:
    `--password VALUE` is refused (exit 2, not ignored: a script passing it must stop doing so;
    the value is not echoed)."""
    if typed is not None:
        _fail(
            "--password is refused: a password on the command line is visible to every user "
            "of the machine (ps) and kept in the shell history; type it at the prompt or set "
            "SIMCHARGE_STAFF_PASSWORD",
            2,
        )
    return os.environ.get("SIMCHARGE_STAFF_PASSWORD") or str(
        typer.prompt(prompt, hide_input=True, confirmation_prompt=True)
    )


@staff_app.command(
    "create",
    help="Create a staff user. The password is prompted for (typed twice, not shown) unless "
    "SIMCHARGE_STAFF_PASSWORD is set; never on the command line. The authenticator app is "
    "enrolled at the first sign-in at /backoffice.",
)
def staff_create(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="agent, finance or admin.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    email: Annotated[str | None, typer.Option(help="E-mail address.")] = None,
    language: Annotated[
        str, typer.Option(help="Language of the back office (en, zh-Hans…).")
    ] = "en",
    must_change: Annotated[
        bool,
        typer.Option(
            "--must-change",
            help="The password is for a colleague: they must choose their own at the first "
            "sign-in, and it stops working after SIMCHARGE_STAFF_RESET_PASSWORD_HOURS.",
        ),
    ] = False,
    typed_password: Annotated[
        str | None,
        typer.Option(
            "--password",
            hidden=True,
            help="Refused: a password on the command line shows in `ps` and the shell history.",
        ),
    ] = None,
) -> None:
    from simcharge.backoffice import audit
    from simcharge.backoffice.models import Role
    from simcharge.backoffice.staff import create_staff, staff_facts
    from simcharge.errors import SimchargeError

    if role not in {r.value for r in Role}:  # before the password is asked for
        _fail(f"role: unknown role {role[:32]!r}; use {', '.join(r.value for r in Role)}", 2)
    password = _staff_password(typed_password, "Password")

    async def create(db: Database) -> str:
        async with db.transaction() as session:
            staff = await create_staff(
                session,
                username=username,
                display_name=name or username,
                role=role,
                password=password,
                email=email,
                language=language,
                set_by_other=must_change,
            )
            await audit.record(
                session,
                audit.command_line_actor("staff create"),
                "staff.create",
                target_type="staff",
                target_id=staff.id,
                after={"username": staff.username, **staff_facts(staff)},
            )
            return staff.username

    try:
        created = _run(create)
    except SimchargeError as exc:
        _fail(f"{exc.field}: {exc.detail}" if exc.field else exc.detail, 2)
        return
    typer.echo(f"created {role} {created}; sign in at /backoffice to enrol the authenticator app")


@staff_app.command(
    "password",
    help="Set a staff member's password (a forgotten one, a lost device): their sessions end, "
    "their passkeys are removed, their lockout lifts. The new password is prompted for (typed "
    "twice, not shown) unless SIMCHARGE_STAFF_PASSWORD is set; never on the command line.",
)
def staff_password(
    username: Annotated[str, typer.Argument(help="The staff member's login name.")],
    typed_password: Annotated[
        str | None,
        typer.Option(
            "--password",
            hidden=True,
            help="Refused: a password on the command line shows in `ps` and the shell history.",
        ),
    ] = None,
) -> None:
    from sqlalchemy import select

    from simcharge.backoffice import audit
    from simcharge.backoffice.models import StaffUser
    from simcharge.backoffice.staff import set_password
    from simcharge.errors import SimchargeError
    from simcharge.kit.clock import utcnow

    password = _staff_password(typed_password, "New password")

    async def reset(db: Database) -> tuple[int, int] | None:
        async with db.transaction() as session:
            staff = (
                await session.execute(
                    select(StaffUser)
                    .where(StaffUser.username == username.strip().casefold())
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if staff is None:
                return None
            actor = audit.command_line_actor("staff password")
            return await set_password(session, actor, staff, password, utcnow())

    try:
        done = _run(reset)
    except SimchargeError as exc:
        _fail(f"{exc.field}: {exc.detail}" if exc.field else exc.detail, 2)
        return
    if done is None:
        _fail(f"no staff member {username}", 1)
    ended, dropped = done
    typer.echo(f"password set; {ended} session(s) ended, {dropped} passkey(s) removed")


_MEMBER_HELP = "The staff member's login name, or their e-mail address if no one else has it."


async def _staff_member(session: Any, member: str, *, lock: bool = False) -> Any:
    """The staff member `member` names (their username, else their e-mail address when it is
    one member's), `lock`ed; None if none (or several share the address)."""
    from sqlalchemy import func, select

    from simcharge.backoffice.models import StaffUser

    named = member.strip().casefold()
    if not named or "\x00" in named:
        return None
    stmt = select(StaffUser).with_for_update() if lock else select(StaffUser)
    found = (await session.execute(stmt.where(StaffUser.username == named))).scalar_one_or_none()
    if found is None and "@" in named:
        by_address = (
            await session.execute(stmt.where(func.lower(StaffUser.email) == named).limit(2))
        ).scalars().all()
        found = by_address[0] if len(by_address) == 1 else None
    return found


@staff_passkeys_app.command(
    "list",
    help="List a staff member's passkeys, the oldest first: id, name, when it was added and "
    "last used, its transports. Never a key.",
)
def staff_passkeys_list(
    member: Annotated[str, typer.Argument(metavar="NAME", help=_MEMBER_HELP)],
) -> None:
    from simcharge.backoffice.passkeys import passkeys_of

    async def read(db: Database) -> list[Any] | None:
        async with db.read() as session:
            staff = await _staff_member(session, member)
            return None if staff is None else list(await passkeys_of(session, staff.id))

    held = _run(read)
    if held is None:
        _fail(f"no staff member {member}", 1)
    rows = [("ID", "ADDED", "LAST USED", "TRANSPORTS", "NAME")]
    rows += [
        (str(p.id), _moment(p.created_at), _moment(p.last_used_at),
         ",".join(p.transports) or "-", p.name)
        for p in held
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])


@staff_passkeys_app.command(
    "remove",
    help="Remove one passkey of a staff member (--id), or all of them (--all: a lost or stolen "
    "device; every session of theirs ends too). Audited.",
)
def staff_passkeys_remove(
    member: Annotated[str, typer.Argument(metavar="NAME", help=_MEMBER_HELP)],
    every: Annotated[
        bool, typer.Option("--all", help="Every passkey of theirs; their sessions end.")
    ] = False,
    passkey_id: Annotated[
        str | None, typer.Option("--id", help="The passkey's id (from the list); nothing else ends.")
    ] = None,
) -> None:
    import uuid

    from simcharge.backoffice import audit
    from simcharge.backoffice.passkeys import (
        PasskeysRemoved,
        StaffPasskeyNotFound,
        remove_all_passkeys,
        remove_member_passkey,
    )
    from simcharge.kit.clock import utcnow

    if every == (passkey_id is not None):
        _fail("give --all or --id ID (one of them)", 2)
    chosen: uuid.UUID | None = None
    if passkey_id is not None:
        try:
            chosen = uuid.UUID(passkey_id.strip())
        except ValueError:
            _fail(f"--id: {passkey_id!r} is not a passkey id", 2)

    async def remove(db: Database) -> PasskeysRemoved | str | None:
        async with db.transaction() as session:
            staff = await _staff_member(session, member, lock=True)
            if staff is None:
                return None
            actor = audit.command_line_actor("staff passkeys remove")
            if chosen is None:
                return await remove_all_passkeys(session, actor, staff.id, now=utcnow())
            try:
                removed = await remove_member_passkey(session, actor, staff.id, chosen, now=utcnow())
            except StaffPasskeyNotFound:
                return ""
            return removed.name

    done = _run(remove)
    if done is None:
        _fail(f"no staff member {member}", 1)
    if done == "":
        _fail(f"{member} has no passkey {chosen}", 1)
    if isinstance(done, PasskeysRemoved):
        typer.echo(f"{done.removed} passkey(s) removed; {done.sessions_ended} session(s) ended")
    else:
        typer.echo(f"passkey {chosen} ({done}) removed")


@receipts_app.command(
    "backfill-credit-notes",
    help="Number the credit notes of the done refunds that have none (completed before credit "
    "notes existed), in the order they were completed, each in its completion year's series "
    "(the year in SIMCHARGE_OPERATOR_TIMEZONE). Nothing is e-mailed. Safe while the worker "
    "runs; run again, it numbers nothing new. Audited (credit_note.backfill).",
)
def receipts_backfill_credit_notes(
    dry_run: Annotated[
        bool, typer.Option(help="Count what would be numbered, by year; number nothing.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Refunds read at once (each numbered alone).")
    ] = 500,
) -> None:
    from simcharge.backoffice import audit
    from simcharge.orders.service import CreditNoteBackfill, backfill_credit_notes

    zone = get_settings().operator_timezone

    async def backfill(db: Database) -> CreditNoteBackfill:
        actor = audit.command_line_actor("receipts backfill-credit-notes")
        return await backfill_credit_notes(
            db, actor, zone=zone, dry_run=dry_run, batch_size=batch_size
        )

    report = _run(backfill)
    for year, count in sorted(report.due.items()):
        numbers = report.numbered.get(year, [])
        span = f": {numbers[0]} … {numbers[-1]}" if len(numbers) > 1 else ""
        span = f": {numbers[0]}" if len(numbers) == 1 else span
        typer.echo(f"  {year}  {count}{span}")
    verb = "would number" if dry_run else "numbered"
    typer.echo(
        f"{verb} {report.count} credit note(s); {report.none_due} done refund(s) get none "
        "(a payment never credited, or money not posted yet)"
    )


@receipts_app.command(
    "continue",
    help="After restoring a backup: make the last number issued after the backup (found in "
    "the e-mails sent, the accounting export, the providers' settlement reports) the series' "
    "last, so the next sale is not given a number another sale already has. Run it for each "
    "series BEFORE starting the worker and the web. Refused when the series is past it "
    "already or the database holds a higher number. Audited (receipts.continue).",
)
def receipts_continue(
    series: Annotated[str, typer.Option(help="receipt or credit-note.")],
    after: Annotated[
        str,
        typer.Option(
            help="The last number issued: as printed (R2026-000006) or a plain number (6)."
        ),
    ],
    year: Annotated[
        int | None,
        typer.Option(
            help="The series' year (default: the number's, else this year in the operator's "
            "time zone, SIMCHARGE_OPERATOR_TIMEZONE)."
        ),
    ] = None,
) -> None:
    from simcharge.backoffice import audit
    from simcharge.kit.clock import utcnow
    from simcharge.orders.numbering import (
        SERIES,
        Continued,
        SeriesRefused,
        continue_series,
        parse_after,
        year_of,
    )

    chosen = SERIES.get(series)
    if chosen is None:
        _fail(f"--series must be one of: {', '.join(SERIES)}", 2)
    this_year = year_of(utcnow(), get_settings().operator_timezone)
    try:
        in_year, value = parse_after(chosen, after, year, this_year)
    except SeriesRefused as exc:
        _fail(exc.message, 2)

    async def move(db: Database) -> Continued | SeriesRefused:
        actor = audit.command_line_actor("receipts continue")
        try:
            return await continue_series(db, actor, chosen, in_year, value)
        except SeriesRefused as exc:
            return exc

    done = _run(move)
    if isinstance(done, SeriesRefused):
        _fail(f"{done.message}; nothing changed", 2)
    last = chosen.number(in_year, done.after)
    if not done.changed:
        typer.echo(
            f"the {chosen.name} series of {in_year} is at {last} already; nothing changed; "
            f"the next is {done.next_number}"
        )
        return
    was = chosen.number(in_year, done.before) if done.before else "none issued"
    typer.echo(
        f"the {chosen.name} series of {in_year} continues after {last} (it was at {was}); "
        f"the next is {done.next_number}"
    )


@receipts_app.command(
    "status",
    help="Each series' last number issued, per year, and the highest one the database holds "
    "(lower after `receipts continue`), to compare with the e-mails sent and the accounting; "
    "then the number each series issues next, in this year of the operator's time zone "
    "(SIMCHARGE_OPERATOR_TIMEZONE).",
)
def receipts_status() -> None:
    from simcharge.kit.clock import utcnow
    from simcharge.orders.numbering import SERIES, SeriesState, series_status, year_of

    zone = get_settings().operator_timezone

    async def read(db: Database) -> list[SeriesState]:
        return await series_status(db)

    states = _run(read)
    this_year = year_of(utcnow(), zone)
    now_at = {st.series.name: st.last for st in states if st.year == this_year}
    nexts = ", ".join(s.number(this_year, now_at.get(s.name, 0) + 1) for s in SERIES.values())
    said_next = f"this year is {this_year} in {zone}: next {nexts}"
    if not states:
        typer.echo("no receipt or credit note issued yet")
        typer.echo(said_next)
        return
    typer.echo(f"{'series':12}{'year':6}{'last issued':16}highest in the database")
    for st in states:
        last = st.series.number(st.year, st.last) if st.last else "none"
        stored = st.series.number(st.year, st.stored) if st.stored else "none"
        typer.echo(f"{st.series.name:12}{st.year:<6}{last:16}{stored}")
    typer.echo(said_next)


@privacy_app.command(
    "sweep",
    help="Delete or anonymise now what the retention settings (SIMCHARGE_RETENTION_*_DAYS) have "
    "made due, as the worker's daily privacy.retention job does; print how many rows each rule "
    "changed. Safe while the worker runs. Orders, payments, refunds, receipts, the ledger and "
    "the audit log are never touched.",
)
def privacy_sweep(
    dry_run: Annotated[
        bool, typer.Option(help="Count what each rule would change; change nothing.")
    ] = False,
) -> None:
    from simcharge.accounts.retention import RULES, RetentionReport, sweep

    settings = get_settings()

    async def run(db: Database) -> RetentionReport:
        return await sweep(db, settings, dry_run=dry_run)

    report = _run(run)
    for rule in RULES:
        days = rule.days(settings)
        done = "kept for ever" if days == 0 else f"{report.changed[rule.name]}"
        typer.echo(f"  {rule.name:24} {done:>14}  ({'SIMCHARGE_' + rule.setting.upper()}={days})")
    verb = "would change" if dry_run else "changed"
    typer.echo(f"{verb} {sum(report.changed.values())} row(s)")


@privacy_app.command(
    "reapply-closures",
    help="After restoring a backup: close again every account the application's JSON log says "
    "was closed (its account.closed lines) and the restored database holds open. Reads FILE "
    "(or stdin: -): one JSON object a line, bare, after a prefix (time stamp, host) or in "
    "Docker's {\"log\": ...}; lines of other events or programs are passed over. Idempotent; "
    "audited (account.closure_reapplied). Exit 2 when the log cannot be read (nothing "
    "changed); exit 1 when no line of it is the application's JSON log (nothing changed), or "
    "when an account.closed line names no account id or carries no valid signature (reported "
    "and passed over; the others applied).",
)
def privacy_reapply_closures(
    log_file: Annotated[
        str, typer.Option("--log", metavar="FILE", help="The shipped JSON log; - for stdin.")
    ] = "-",
    dry_run: Annotated[
        bool, typer.Option(help="Say which accounts would be closed again; change nothing.")
    ] = False,
    accept_unsigned: Annotated[
        bool,
        typer.Option(
            "--accept-unsigned",
            help="DANGEROUS: also apply account.closed lines whose signature is missing or "
            "does not verify (a log written before lines were signed, or under a secret key "
            "no longer in SIMCHARGE_SECRET_KEY_PREVIOUS). Anyone who could write a line into "
            "the log could have an account erased: read those lines first (--dry-run).",
        ),
    ] = False,
) -> None:
    from simcharge.accounts.closures import Reapplied, logged_closures, reapply
    from simcharge.backoffice import audit

    settings = get_settings()
    try:
        if log_file == "-":
            logged = logged_closures(sys.stdin, settings.secret_keys)
        else:
            with open(log_file, encoding="utf-8") as lines:
                logged = logged_closures(lines, settings.secret_keys)
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"simcharge: cannot read the log {log_file}: {_briefly(exc)}", 2)
    if logged.written and not logged.ours:
        name = "stdin" if log_file == "-" else log_file
        _fail(
            f"simcharge: no line of {name} is simcharge's JSON log: {logged.written} line(s) "
            "read, none a JSON object with the application's event, level and timestamp (bare, "
            'after a prefix, or in Docker\'s {"log": ...}); is it the log of the web and the '
            "worker, written with SIMCHARGE_LOG_JSON=true? Nothing changed",
            1,
        )
    if logged.unreadable:
        shown = ", ".join(str(n) for n in logged.unreadable[:10])
        more = f" and {len(logged.unreadable) - 10} more" if len(logged.unreadable) > 10 else ""
        typer.secho(
            f"simcharge: account.closed line(s) {shown}{more} name no account id: passed over, "
            "nothing changed for them; the other lines are applied",
            fg=typer.colors.RED, err=True,
        )

    async def run(db: Database) -> Reapplied:
        actor = audit.command_line_actor("privacy reapply-closures")
        return await reapply(
            db, settings, logged, actor=actor, dry_run=dry_run, accept_unsigned=accept_unsigned
        )

    done = _run(run)
    verb = "would close again" if dry_run else "closed again"
    for account_id in done.closed:
        typer.echo(f"  {account_id}  {verb}")
    for account_id in done.already:
        typer.echo(f"  {account_id}  closed already")
    for account_id in done.unknown:
        typer.echo(f"  {account_id}  not in the database (opened after the backup)")
    for account_id in done.unsigned:
        typer.echo(f"  {account_id}  passed over: no line of it carries a valid signature")
    typer.echo(
        f"{logged.lines} line(s) read, {len(logged.closed_at)} closure(s) logged: {verb} "
        f"{len(done.closed)}, closed already {len(done.already)}, not in the database "
        f"{len(done.unknown)}"
        + (f", unsigned (passed over) {len(done.unsigned)}" if done.unsigned else "")
        + (f", naming no account id {len(logged.unreadable)}" if logged.unreadable else "")
    )
    _say_unsigned(logged.unsigned, accept_unsigned)
    if logged.unreadable or done.unsigned:
        raise typer.Exit(1)


def _say_unsigned(numbers: list[int], accepted: bool) -> None:
    """The `account.closed` lines whose signature is missing or does not verify, on stderr:
    passed over, or (`--accept-unsigned`) applied all the same."""
    if not numbers:
        return
    shown = ", ".join(str(n) for n in numbers[:10])
    more = f" and {len(numbers) - 10} more" if len(numbers) > 10 else ""
    said = (
        "applied all the same (--accept-unsigned)" if accepted
        else "passed over (a forged line, or one written before lines were signed: read them, "
        "then --accept-unsigned)"
    )
    typer.secho(
        f"simcharge: account.closed line(s) {shown}{more} carry no valid signature: {said}",
        fg=typer.colors.RED, err=True,
    )


@secrets_app.command(
    "reseal",
    help="Seal every stored sealed value (customers' and staff's authenticator secrets, codes "
    "of queued messages) again under SIMCHARGE_SECRET_KEY, so that a key of "
    "SIMCHARGE_SECRET_KEY_PREVIOUS can be dropped; print the counts, and how many accounts "
    "hold unused recovery codes hashed under each key (hashes cannot be re-hashed). Safe while "
    "the site and the worker run; run again, it changes nothing. Exit 1 when a value opens "
    "under no key. Audited (secrets.reseal).",
)
def secrets_reseal(
    dry_run: Annotated[
        bool, typer.Option(help="Count what would be sealed again; change nothing.")
    ] = False,
) -> None:
    from simcharge.auth.reseal import ResealReport, reseal
    from simcharge.backoffice import audit
    from simcharge.kit.crypto import key_id

    settings = get_settings()
    keys = settings.secret_keys

    async def run(db: Database) -> ResealReport:
        actor = audit.command_line_actor("secrets reseal")
        return await reseal(db, keys, dry_run=dry_run, actor=actor)

    report = _run(run)
    names = {key_id(k): ("current" if i == 0 else f"previous #{i}") for i, k in enumerate(keys)}
    typer.echo(f"current key {report.current_key}; previous keys: {len(keys) - 1}")
    verb = "would seal again" if dry_run else "sealed again"
    for name, n in report.sealed.items():
        typer.echo(
            f"  {name:24} {verb} {n.resealed}, already current {n.current}, "
            f"opened by no key {n.broken}"
        )
    for tag, accounts in sorted(report.recovery.items()):
        whose = f"key {tag} ({names[tag]})" if tag in names else "a key not told (made earlier)"
        typer.echo(f"  recovery codes: {accounts} account(s) hold unused ones hashed under {whose}")
    if len(keys) == 1:
        typer.echo("  recovery codes: none under a previous key (no previous key)")
    for i, k in enumerate(keys[1:], start=1):
        if key_id(k) not in report.recovery:
            typer.echo(f"  recovery codes: none under key {key_id(k)} (previous #{i})")
    if any(n.broken for n in report.sealed.values()):
        _fail(
            "simcharge: some values open under no key of the ring (logged as crypto.seal_broken):"
            " put the key they were sealed under back into SIMCHARGE_SECRET_KEY_PREVIOUS",
            1,
        )


def _settings_error(exc: SettingsError) -> str:
    """`error parsing value for field "x" from source …` as the variable to fix (never its
    value, which may be a secret)."""
    found = re.search(r'field "(\w+)"', str(exc))
    if found is None:
        return "the settings cannot be read"
    return (
        f"SIMCHARGE_{found.group(1).upper()}: not a value of its kind "
        "(a list or a mapping is written as JSON: [7, 1], {\"a\": 1})"
    )


def _configure_command_logging() -> None:
    """Every command logs as the server does: to stderr (its output is on stdout), as JSON
    when SIMCHARGE_LOG_JSON=true. Settings that cannot be read are said by the command that
    needs them (and `catalog check` needs none)."""
    try:
        settings = get_settings()
    except (ValidationError, SettingsError):
        return
    from simcharge.kit.logging import configure_logging

    configure_logging(settings.log_level, json=settings.log_json)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        _configure_command_logging()
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except SettingsError as exc:
        # A value the settings cannot even parse (a list not written as JSON, say).
        typer.secho(f"simcharge: cannot start: {_settings_error(exc)}", fg=typer.colors.RED,
                    err=True)
        sys.exit(2)
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        # A configuration refused at start (e.g. production with the default secret key): say
        # what to fix, one line each, and exit; a traceback would only hide it.
        for problem in settings_problems(exc):
            typer.secho(f"simcharge: cannot start: {problem}", fg=typer.colors.RED, err=True)
        sys.exit(2)


@usage_app.command(
    "import",
    help="Rate and charge usage records. Records charged before (same id) are skipped; bad "
    "records are reported by line and do not stop the others (exit code 2 if any).",
)
def usage_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV (columns id, subscriber, service, quantity, started_at[, country]) or "
            "JSON lines (.jsonl, .ndjson or .json) with the same keys; gzip-compressed or "
            "not (usage.csv.gz)."
        ),
    ],
) -> None:
    import gzip
    import zlib

    from sqlalchemy.exc import DBAPIError

    from simcharge.charging.batch import (
        UsageReport,
        import_usage_records,
        open_usage_file,
        read_usage_file,
    )

    settings = get_settings()
    try:
        # gzip or not; bytes that are not UTF-8 make their record bad (by line), not the import.
        stream = open_usage_file(file)
    except OSError as exc:
        _fail(f"{file}: cannot read the file: {exc.strerror}")
        raise  # unreachable: _fail exits

    async def load(db: Database) -> UsageReport:
        with stream:
            return await import_usage_records(db, settings, read_usage_file(stream, file.name))

    try:
        report = _run(load, said=False)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # A compressed file cut off (still being written) or damaged: the chunks before the
        # damage are charged, the one being read is not (a chunk is all or nothing).
        _fail(
            f"{file}: the import stopped: the compressed file is cut off or damaged ({exc}). "
            "The records charged before stay charged; import the same file again when it is "
            "complete to charge the rest."
        )
        raise  # unreachable: _fail exits
    except (DBAPIError, OSError) as exc:
        # A chunk is all or nothing and charging is idempotent: running it again finishes it.
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        _fail(
            f"{file}: the import stopped: the database failed ({cause}). The records charged "
            "before stay charged; run the same import again to charge the rest."
        )
        raise  # unreachable: _fail exits
    for e in report.errors:
        typer.secho(f"{file}: line {e.line}: {e.field}: {e.detail}", fg=typer.colors.RED, err=True)
    if report.errors_not_listed:
        typer.secho(
            f"{file}: {report.errors_not_listed} more bad record(s) not listed",
            fg=typer.colors.RED,
            err=True,
        )
    typer.echo(
        f"{report.accepted} record(s) charged, {report.duplicates} already charged, "
        f"{report.rejected} rejected, {report.unbilled_records} partly unbilled"
    )
    if report.errors:
        raise typer.Exit(2)
