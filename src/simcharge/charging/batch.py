"""Batch (offline) charging: usage records from a file or the API, rated and charged set-based.

The file is read as a stream and taken a chunk at a time (`SIMCHARGE_USAGE_CHUNK_SIZE`; the next
chunk is read and checked in a thread meanwhile). Each chunk is one transaction with a fixed
number of bulk statements whatever its size: the records already charged (by id; see
`import_usage_records`), the lines they name, the lines' ledger accounts (locked), the usage
records (streamed with COPY on PostgreSQL as they are rated), one ledger batch with one posted
transfer per bucket or wallet the chunk took from, the lines' last activity and the alerts.
Per record there is only Python's arithmetic: the checks, the rate, the consumption order
(`consumption.take`, as for real-time charging), in time order within the chunk.

Each usage record keeps what it took from where (`taken`); a chunk's transfer from an account
is the sum of its records' takes, and carries the same `created_at` as they do.

A bad record is reported with its line number and left out; the others go on. A record id
charged before is a duplicate and is not charged again, so a file can be imported twice.
Usage that happened cannot be refused: what no bucket or wallet could pay is kept on the
record as `unbilled` (a bounded account is never overdrawn).
"""

from __future__ import annotations

import asyncio
import csv
import gc
import gzip
import io
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from hashlib import sha1
from operator import itemgetter
from pathlib import Path
from struct import Struct
from typing import IO, Any

import asyncpg
from babel import Locale
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging import alerts
from simcharge.charging.consumption import LinePots, Pot, lock_pots, take
from simcharge.charging.models import UNIT_OF
from simcharge.charging.rating import Rate, RatingTable, load_rating_table
from simcharge.charging.repository import UsageRepository
from simcharge.config import Settings
from simcharge.db import Database, RetryableError, dialect_name
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import SIMCHARGE_NAMESPACE, uuid7
from simcharge.kit.phone import country_of
from simcharge.ledger import chart
from simcharge.ledger.service import NewTransfer, create_transfers
from simcharge.lines.models import LineState

COLUMNS = ("id", "subscriber", "service", "quantity", "started_at", "country")
MAX_API_RECORDS = 10_000
MAX_LISTED_ERRORS = 10_000
"""An import lists this many bad records at most (the API's batches never reach it); `rejected`
counts them all."""
CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of our clock (read when the import starts) a record's `started_at` may be: the
network's clocks and ours differ a little. A record dated later is bad: usage that has not
happened yet would move the line's last activity ahead, and an inactive line would never
freeze."""
_SKEW_SAID = f" (more than {CLOCK_SKEW.seconds // 60} minutes ahead of our clock)"
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""A record dated before is bad: a clock in the network reset or zeroed (the Unix, GPS or NTP
epoch; year 1), not usage of an eSIM line — to be taken from today's wallet at today's tariff (the
buckets valid then long gone). A limit by age (days before the import) would also refuse files
from another era; it would need a setting, as roaming records may arrive weeks late."""
_SLICE = 5000
_SERVICES = frozenset(s.value for s in UNIT_OF)
_UNITS = {s.value: u for s, u in UNIT_OF.items()}


class UsageError(BaseModel):
    line: int | None = Field(
        default=None, description="A file's: its line (1 = the header of a CSV file)"
    )
    record: int | None = Field(
        default=None, description="The API's: the record's index in `records` (0 = the first)"
    )
    field: str
    detail: str


class UsageReport(BaseModel):
    accepted: int = 0
    """Records rated and charged now."""
    duplicates: int = 0
    """Records charged before (same id): not charged again."""
    rejected: int = 0
    errors: list[UsageError] = []
    """The bad records, by line or index (at most `MAX_LISTED_ERRORS` of them)."""
    errors_not_listed: int = 0
    """Bad records beyond those listed in `errors`."""
    unbilled_records: int = 0
    """Accepted records of which some usage could not be paid (kept as `unbilled`)."""


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be read as a record at all (not CSV or JSON, a bad header)."""

    field: str
    detail: str


Row = tuple[int, "Sequence[Any] | dict[str, Any] | BadRow"]
"""What readers yield: the line number, and the record's fields in `COLUMNS` order (or a
mapping with those keys), or why the row is unreadable."""

Record = tuple[int, str, str, str, str, int, datetime, "str | None"]
"""A record that passed the checks: line, external id, id (hex of the UUID), subscriber (`+` and
the MSISDN's digits, or the IMSI's), service, quantity, started_at (UTC), country (or None)."""


class UsageBatch(BaseModel):
    records: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_API_RECORDS,
        description="Each: id (a string), subscriber (msisdn-…, imsi-… or +E.164), service "
        "(voice, data, sms), quantity (a JSON number: seconds, bytes, messages; at most 18 "
        "digits), started_at (ISO 8601 / RFC 3339, with a time of day), country (ISO 3166-1 "
        "alpha-2, optional: the line's home country). Errors name a record by its index here "
        "(`record`, from 0).",
    )

    def records_as_rows(self) -> Iterator[Row]:
        return iter(enumerate(self.records))


# --- reading files ----------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"


def open_usage_file(path: Path) -> IO[str]:
    """A usage file as text, streamed: gzip-compressed or not (told by its first bytes, not its
    name), a UTF-8 byte order mark dropped, line ends kept for the csv module (CRLF or LF).
    Bytes that are not UTF-8 are kept as lone surrogates, so that they make their record bad,
    not the import. A gzip stream cut off raises `EOFError` when the reading reaches the cut."""
    with path.open("rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    if compressed:
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
    return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")


def usage_format_of(name: str) -> str:
    """`jsonl` or `csv`, from a file's name (`.gz` after it is the compression's)."""
    lowered = name.lower().removesuffix(".gz")
    return "jsonl" if lowered.endswith((".jsonl", ".ndjson", ".json")) else "csv"


def _ends_a_line(stream: IO[str]) -> bool:
    """Whether a file read to its end ended with a line end: its last byte read (no cost per
    line). A gzip stream is whole when it ends (one cut off raises `EOFError`); a stream that is
    no file (a text given whole) is taken as whole too."""
    binary = getattr(stream, "buffer", None)
    if binary is None or isinstance(binary, gzip.GzipFile):
        return True
    try:
        at = binary.tell()
        last = os.pread(stream.fileno(), 1, at - 1) if at > 0 else b"\n"
    except (OSError, ValueError, io.UnsupportedOperation):
        return True
    return last in (b"\n", b"\r")


_UTF16 = ("\udcff\udcfe", "\udcfe\udcff")
"""A UTF-16 byte order mark (FF FE or FE FF) read as UTF-8 (bytes kept as lone surrogates)."""


def _not_utf8_file(first: str, *, whole: bool) -> str | None:
    """Why a file whose first line is `first` cannot be read, if it is not UTF-8: a UTF-16 byte
    order mark, NUL bytes (UTF-16 without one), or — `whole`: the line is the header, no
    record — bytes that are not UTF-8."""
    if first.startswith(_UTF16):
        return "the file is not UTF-8: it is UTF-16 (its byte order mark); save it as UTF-8"
    if "\x00" in first:
        return "the file is not UTF-8 text: its first line has NUL bytes (UTF-16?)"
    wrong = _not_utf8(first) if whole else None
    return None if wrong is None else f"the file is not UTF-8: its first line is {wrong}"


_CUT_OFF = (
    "the file's last line has no line end: cut off (is the file still being written?); "
    "not charged — import the file again when it is complete"
)


def read_csv(stream: IO[str], *, complete: bool = False) -> Iterator[Row]:
    """Rows of a CSV file with a header naming (at least) the columns of `COLUMNS` but
    `country`; yields (file line number, fields). A bad header yields one row that says so.

    A CSV row is not self-delimiting: a file cut off in its last line would give a record
    with a shorter quantity or an earlier time, which would be charged, and the whole record,
    once the file is complete, refused as "charged before for another record". So a last line
    without a line end is a bad row, not a record — unless `complete` (a text given whole).
    Each row is held back until the next is read, so that the last is known as such."""
    reader = csv.reader(stream)
    try:
        first = next(reader, None)
    except csv.Error as exc:
        yield 1, BadRow("header", f"not CSV: {exc}")
        return
    if first is None:
        yield 1, BadRow("header", "the file is empty: no header (is it still being written?)")
        return
    not_utf8 = _not_utf8_file(",".join(first), whole=True)
    if not_utf8 is not None:
        yield 1, BadRow("header", not_utf8)
        return
    header = [h.strip().lower().lstrip("\ufeff") for h in first]
    missing = [c for c in COLUMNS[:-1] if c not in header]
    if missing:
        other = next((d for d in ";\t|" if len(header) == 1 and d in header[0]), None)
        if other is not None:
            said = "a tab" if other == "\t" else f"'{other}'"
            detail = f"the columns must be separated by commas, not {said}"
        else:
            detail = f"missing column(s): {', '.join(missing)}"
        yield 1, BadRow("header", detail)
        return
    pick = itemgetter(*(header.index(c) for c in COLUMNS if c in header))
    no_country = "country" not in header
    width = len(header)
    held: Row | None = None
    while True:
        try:
            for values in reader:
                if held is not None:
                    yield held
                    held = None
                if len(values) != width:
                    if values and (len(values) > 1 or values[0].strip()):
                        detail = f"{len(values)} fields, the header has {width}"
                        held = reader.line_num, BadRow("row", detail)
                    continue  # a blank line: the row before it was not the last
                held = reader.line_num, (*pick(values), None) if no_country else pick(values)
            break
        except csv.Error as exc:  # a field past the csv module's limit: the reader goes on after
            if held is not None:
                yield held
            held = reader.line_num, BadRow("row", f"not CSV: {exc}")
    if held is not None:
        if not complete and not _ends_a_line(stream):
            held = held[0], BadRow("row", _CUT_OFF)
        yield held


def read_jsonl(stream: IO[str]) -> Iterator[Row]:
    """Rows of JSON lines. A JSON object is self-delimiting: a last line without a line end
    that is a whole object is a record; one cut off is not JSON, and says so. A file of no
    line (or blank lines only) is one error, as an empty CSV file is."""
    empty = True
    for n, text in enumerate(stream, start=1):
        if empty and n == 1:
            not_utf8 = _not_utf8_file(text, whole=False)
            if not_utf8 is not None:
                yield 1, BadRow("row", not_utf8)
                return
        if not text.strip():
            continue
        empty = False
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            cut = text[-1] != "\n" and text[-1] != "\r"
            yield n, BadRow("row", _CUT_OFF if cut else f"not JSON: {exc.msg}")
            continue
        except (ValueError, RecursionError) as exc:  # a number of over 4,300 digits; deep nesting
            reason = (
                "nested too deep" if isinstance(exc, RecursionError)
                else "a number of more than 4,300 digits"
            )  # fmt: skip
            yield n, BadRow("row", f"not JSON we can read: {reason}")
            continue
        yield n, row if isinstance(row, dict) else BadRow("row", "not a JSON object")
    if empty:
        yield 1, BadRow("row", "the file is empty: no record (is it still being written?)")


def read_usage_file(stream: IO[str], name: str, *, complete: bool = False) -> Iterator[Row]:
    """The rows of a usage file (`name` says its format). `complete`: the text is whole (not a
    file that may be cut off in its last line)."""
    if usage_format_of(name) == "jsonl":
        return read_jsonl(stream)
    return read_csv(stream, complete=complete)


def read_usage_text(text: str, name: str) -> Iterator[Row]:
    """The rows of a usage file given whole as text."""
    return read_usage_file(io.StringIO(text.removeprefix("\ufeff")), name, complete=True)


# --- checking records -------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value.__class__ is str:
        return value.strip()
    return "" if value is None else str(value).strip()


_SHOWN = 60
"""An error shows this many characters of a value at most."""


def _not_utf8(value: Any) -> str | None:
    """What is not UTF-8 in a text (bytes of the file kept as lone surrogates, or a JSON
    `\\udcxx` escape), said as bytes or code points; None if it is all UTF-8."""
    if value.__class__ is not str or value.isascii():
        return None
    bad = [c for c in value if "\ud800" <= c <= "\udfff"]
    if not bad:
        return None
    said = " ".join(
        f"0x{ord(c) - 0xDC00:02X}" if "\udc80" <= c <= "\udcff" else f"U+{ord(c):04X}"
        for c in bad[:4]
    )
    return f"not UTF-8 ({said}{' …' if len(bad) > 4 else ''})"


def _shown(value: Any) -> str:
    """A value as the input wrote it, as a JSON literal (`"x"`, `true`, `5`, `null`): a CSV
    field is text, so it is quoted; control characters are escaped. At most `_SHOWN`
    characters."""
    try:
        said = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        said = json.dumps(str(value), ensure_ascii=False)
    return said if len(said) <= _SHOWN else said[: _SHOWN - 1] + "…"


def _bad(name: str, value: Any, what: str) -> BadRow:
    """`value` (a field's raw input) is not `what`; or it is not UTF-8, which says so."""
    wrong = _not_utf8(value)
    if wrong is not None:
        return BadRow(name, wrong)
    return BadRow(name, f"{_shown(value)} is not {what}")


_RECORD_ID_PREFIX = SIMCHARGE_NAMESPACE.bytes + b"usage:batch:"


def record_id_of(external_id: str) -> str:
    """The hex text of `derived_id("usage", "batch", external_id)` (a UUIDv5), without building a
    `UUID`: this runs for every record of a batch."""
    made = bytearray(
        sha1(_RECORD_ID_PREFIX + external_id.encode(), usedforsecurity=False).digest()[:16]
    )
    made[6] = made[6] & 0x0F | 0x50  # version 5
    made[8] = made[8] & 0x3F | 0x80  # RFC 4122 variant
    return made.hex()


def _subscriber(raw: Any) -> str | BadRow:
    """`+` and the MSISDN's digits, or the IMSI's digits."""
    who = _text(raw)
    if who[:7] == "msisdn-":
        digits = who[7:]
        subscriber = "+" + digits
    elif who[:1] == "+":
        subscriber = who
        digits = who[1:]
    elif who[:5] == "imsi-":
        subscriber = digits = who[5:]
    else:
        digits = ""
    if not (digits.isdigit() and digits.isascii() and len(digits) <= 15):
        return _bad(
            "subscriber",
            raw,
            "msisdn-<digits>, +<digits> or imsi-<digits> (at most 15 digits)",
        )
    return subscriber


def _service(raw: Any) -> str | BadRow:
    service = _text(raw).lower()
    return service if service in _SERVICES else _bad("service", raw, "voice, data or sms")


ISO_COUNTRIES = frozenset(
    code for code in map(str, Locale("en").territories) if len(code) == 2 and code.isalpha()
) - {
    "ZZ", "EU", "EZ", "UN", "QO", "XA", "XB",  # CLDR's own: unknown, unions, pseudo-regions
    "AC", "CP", "CQ", "DG", "EA", "IC", "TA",  # exceptionally reserved in ISO 3166-1
}  # fmt: skip
"""ISO 3166-1 alpha-2's assigned codes (249, from CLDR's territories in Babel), and `XK`
(Kosovo: user-assigned, but what CLDR, the ITU and the networks use)."""


def _country(raw: Any) -> str | BadRow:
    """The ISO 3166-1 alpha-2 code, or "" when blank."""
    if raw is not None and raw.__class__ is not str:
        return _bad("country", raw, "an ISO 3166-1 alpha-2 code (text, or null)")
    country = _text(raw).upper()
    if country and country not in ISO_COUNTRIES:
        return _bad("country", raw, "an ISO 3166-1 alpha-2 country code")
    return country


_NO_ID = BadRow("id", "required, at most 128 printable characters")
_QUANTITY_DIGITS = 18
"""A quantity has at most 18 digits (below 10^18: a usage record and the ledger hold 64-bit
signed numbers)."""
_BLANK = BadRow("id", "required, at most 128 printable characters (every field is empty)")
"""A row of empty fields: a spreadsheet's export ends with some (`,,,,,`). Not a record, and
skipped in a CSV file like a blank line; a JSON object with none of the keys is a bad record."""


class RecordChecker:
    """Checks records one by one. A file names the same few subscribers, services and countries
    over and over: each spelling is checked once, and its records share one string."""

    _KEEP = 100_000
    """Spellings remembered per field (then forgotten, to bound the memory)."""

    def __init__(self, latest: datetime) -> None:
        self.latest = latest
        """The latest `started_at` a record may have (now and the `CLOCK_SKEW` allowance)."""
        self.known: dict[Callable[[Any], str | BadRow], dict[str, str | BadRow]] = {
            _subscriber: {},
            _service: {},
            _country: {},
        }

    def _checked(self, check: Callable[[Any], str | BadRow], raw: Any) -> str | BadRow:
        if raw.__class__ is not str:
            return check(raw)
        known = self.known[check]
        found = known.get(raw)
        if found is None:
            if len(known) >= self._KEEP:
                known.clear()
            found = known[raw] = check(raw)
        return found

    def check(self, line: int, fields: Sequence[Any], *, typed: bool = False) -> Record | BadRow:
        """The record on `line`, or what is wrong with it (the first field that is). `typed`: the
        fields are JSON values (a JSON line, the API), typed as the schema says — `id`,
        `subscriber`, `service`, `started_at` and `country` strings, `quantity` a whole
        number — as Nchf types its members: `"1"` or `true` is no quantity, `5` no id. A CSV
        field is text: a quantity there is digits."""
        ext, who, service, quantity, when, country = fields
        raw_ext = ext
        ext = ext.strip() if ext.__class__ is str else _text(ext)
        if not ext or len(ext) > 128 or not ext.isprintable():
            if not ext and not any(_text(f) for f in fields):
                return _BLANK
            wrong = _not_utf8(raw_ext)
            return BadRow("id", wrong) if wrong is not None else _NO_ID
        if typed and raw_ext.__class__ is not str:
            return _bad("id", raw_ext, "a string (an id is text)")
        if typed and who.__class__ is not str:
            return _bad("subscriber", who, "a string: msisdn-<digits>, +<digits> or imsi-<digits>")
        subscriber = self._checked(_subscriber, who)
        if isinstance(subscriber, BadRow):
            return subscriber
        service = self._checked(_service, service)
        if isinstance(service, BadRow):
            return service
        if typed:
            if quantity.__class__ is not int or quantity < 0:
                return _bad("quantity", quantity, "a whole number of units (a JSON number)")
            units = quantity
            if units >= 10**_QUANTITY_DIGITS:
                return BadRow(
                    "quantity", f"{units} is too large: at most {_QUANTITY_DIGITS} digits"
                )
        else:
            text = quantity.strip() if quantity.__class__ is str else _text(quantity)
            if not (text.isdigit() and text.isascii()):
                return _bad("quantity", quantity, "a whole number of units")
            if len(text) > _QUANTITY_DIGITS and len(text.lstrip("0")) > _QUANTITY_DIGITS:
                return BadRow(
                    "quantity",
                    f"{_shown(quantity)} is too large: at most {_QUANTITY_DIGITS} digits",
                )
            units = int(text)
        if when.__class__ is datetime:
            started_at = when
        else:
            if typed and when.__class__ is not str:
                return _bad("started_at", when, "an ISO 8601 time (a string)")
            raw_when = when
            when = when.strip() if when.__class__ is str else _text(when)
            if "z" in when or "t" in when:  # RFC 3339 allows them lower case
                when = when.upper()
            try:
                started_at = datetime.fromisoformat(when)
            except ValueError:
                return _bad("started_at", raw_when, "an ISO 8601 time")
            if "T" not in when and " " not in when:
                # A date alone (2026-12-07, 20261207, 2026-W49-1): not when the usage was.
                return _bad("started_at", raw_when, "a time: it is a date without a time of day")
        zone = started_at.tzinfo
        if zone is None:
            started_at = started_at.replace(tzinfo=UTC)
        elif zone is not UTC and started_at.utcoffset():
            try:
                started_at = started_at.astimezone(UTC)
            except OverflowError:  # e.g. 0001-01-01T00:00+01:00: before year 1 in UTC
                return BadRow("started_at", f"{_shown(when)} is out of range")
        if started_at > self.latest:
            return BadRow("started_at", f"{started_at.isoformat()} is in the future{_SKEW_SAID}")
        if started_at < EARLIEST:
            return BadRow("started_at", f"{started_at.isoformat()} is before 2000: a clock reset?")
        if service == "voice" and units > (self.latest - started_at).total_seconds():
            return BadRow(
                "quantity",
                f"a call of {units} s from {started_at.isoformat()} would end after now",
            )
        if country is None or country == "":
            country = None
        elif typed and country.__class__ is not str:
            return _bad("country", country, "an ISO 3166-1 alpha-2 code (a string, or null)")
        else:
            country = self._checked(_country, country)
            if isinstance(country, BadRow):
                return country
        return (line, ext, record_id_of(ext), subscriber, service, units, started_at,
                country or None)  # fmt: skip


def _fields(row: dict[str, Any]) -> tuple[Any, ...]:
    get = row.get
    return (get("id"), get("subscriber"), get("service"), get("quantity"), get("started_at"),
            get("country"))  # fmt: skip


@dataclass
class _Errors:
    """Bad records: (line, field, detail) of at most `MAX_LISTED_ERRORS`, all counted."""

    items: list[tuple[int, str, str]] = field(default_factory=list)
    count: int = 0

    def add(self, line: int, name: str, detail: str) -> None:
        self.count += 1
        if len(self.items) < MAX_LISTED_ERRORS:
            self.items.append((line, name, detail))

    def extend(self, other: _Errors) -> None:
        for item in other.items:
            self.add(*item)
        self.count += other.count - len(other.items)


_KEPT = Struct("<qqq")
"""What `_chunks` keeps of a record whose id it has seen, packed: its line, its quantity, and its
start in microseconds after `EARLIEST` (so the same instant however it was written)."""
_MICROSECOND = timedelta(microseconds=1)
_NO_COUNTRY = "\0\0"


def _kept(record: Record) -> bytes:
    """`record` as `_chunks` remembers it under its id: one bytes object of at most 80 bytes.
    The record itself is about 300 with its id's text, its time and its quantity, and a file's
    ids are remembered for up to five chunks (250,000 records by default): kept whole, they
    raised the bench's peak by 41 MB; packed, by 15. Line, quantity and start (`_KEPT`), then
    the country (2 letters, or 2 NULs when none was said), the service and the subscriber — all
    ASCII once checked. No service's name begins another's and a subscriber begins with `+` or a
    digit, so the concatenation is exact."""
    line, _, _, subscriber, service, units, started_at, country = record
    return (
        _KEPT.pack(line, units, (started_at - EARLIEST) // _MICROSECOND)
        + f"{country or _NO_COUNTRY}{service}{subscriber}".encode()
    )


def _unkept(kept: bytes) -> tuple[str, str, int, datetime, str | None]:
    """The record kept as `kept` (`_kept`): subscriber, service, quantity, start, country."""
    _, units, micros = _KEPT.unpack_from(kept)
    country = kept[24:26].decode()
    rest = kept[26:].decode()
    service = next(s for s in _SERVICES if rest.startswith(s))
    return (rest[len(service):], service, units, EARLIEST + micros * _MICROSECOND,
            None if country == _NO_COUNTRY else country)  # fmt: skip


def _line_of(kept: bytes) -> int:
    """The line (or index) of the record kept as `kept` (`_kept`)."""
    return int(_KEPT.unpack_from(kept)[0])


class _Chunk(list[Record]):
    """A chunk's records, and what the file said before under some of their ids.

    `firsts`: the records that repeat an id seen before in the file (by line), and the first
    record of that id (`_kept`). They are charged in a later chunk than any other record of the
    id, so that the rule is the one of an id charged before (`_ChunkCharge._same_as_charged`):
    the line resolved, the country as stored. `riders`: lines that repeat, exactly as written,
    the first record of their id, which is in this chunk (line, its line): whatever becomes of
    that record becomes of them — charged or a duplicate, they are duplicates; refused, they are
    refused for the same reason."""

    __slots__ = ("firsts", "riders")

    def __init__(self, records: Iterable[Record] = ()) -> None:
        super().__init__(records)
        self.firsts: dict[int, bytes] = {}
        self.riders: list[tuple[int, int]] = []


def _chunks(
    rows: Iterable[Row],
    size: int,
    errors: _Errors,
    *,
    latest: datetime,
) -> Iterator[_Chunk]:
    """The good records of `rows`, `size` at a time; the others go to `errors`.

    A record id seen before in the file follows the rule of an id charged before, whatever the
    distance — it is that rule: a record repeating an id goes to a chunk after the one of the
    id's last record, where the chunk's lookup finds the id charged (the same record again is a
    duplicate, another record under the id a bad record) or not (what had the id was refused:
    this record is charged or refused on its own). A chunk holds each id once (the same id
    twice in a chunk would be two usage rows with one key). The exact same text again, next to
    the first (same chunk), waits for that record's outcome instead (`_Chunk.riders`). The ids
    are remembered for a few chunks (bounded memory) and forgotten only between chunks; an id
    repeated after they are forgotten is in the database by then, where the same rule finds
    it."""
    chunk = _Chunk()
    number = 0  # the chunk being filled
    start = 0  # the line (index) from which the records read are in it
    seen: dict[str, bytes] = {}  # id → `_kept(record)`: a record held for its id is 4 times that
    placed: dict[str, int] = {}  # a repeated id → the chunk its last record goes in
    later: dict[int, _Chunk] = {}  # records that repeat an id of the chunk being filled
    check = RecordChecker(latest).check
    for line, row in rows:
        if isinstance(row, BadRow):
            errors.add(line, row.field, row.detail)
            continue
        fields: Sequence[Any]
        if isinstance(row, dict):
            typed, fields = True, _fields(row)
        else:
            typed, fields = False, row
        record = check(line, fields, typed=typed)
        if isinstance(record, BadRow):
            if record is _BLANK and not typed:
                continue
            errors.add(line, record.field, record.detail)
            continue
        ext = record[1]
        first = seen.get(ext)
        if first is None:
            seen[ext] = _kept(record)
            chunk.append(record)
        else:
            here = _line_of(first) >= start
            if here and _kept(record)[8:] == first[8:]:
                chunk.riders.append((line, _line_of(first)))
            else:
                last = placed.get(ext, number if here else number - 1)
                goes = placed[ext] = max(last + 1, number)
                target = chunk if goes == number else later.setdefault(goes, _Chunk())
                target.append(record)
                target.firsts[line] = first
        if len(chunk) + len(chunk.riders) >= size:
            yield chunk
            number += 1
            start = line + 1
            chunk = later.pop(number) if number in later else _Chunk()
            if len(seen) > 4 * size:
                placed = {k: n for k, n in placed.items() if n >= number}
                seen = {k: seen[k] for k in placed}
    while True:
        if chunk or chunk.riders:
            yield chunk
        if not later:
            break
        number += 1
        chunk = later.pop(number) if number in later else _Chunk()


# --- rating and charging a chunk --------------------------------------------------------------


@lru_cache(maxsize=100_000)
def _home_country(msisdn: str) -> str | None:
    return country_of(msisdn)


@lru_cache(maxsize=1024)
def _counterparty(unit: str, is_money: bool, shard: int) -> uuid.UUID:
    """Where usage goes: wallet money to `revenue:usage:<CUR>`, units to `consumption:<unit>`."""
    if is_money:
        return chart.usage_revenue(unit, shard).id
    return chart.consumption(unit, shard).id


class _Rater:
    """Zones and rates by (service, country, currency), looked up once per import."""

    def __init__(self, table: RatingTable) -> None:
        self.table = table
        self.found: dict[tuple[str, str | None, str], tuple[str | None, Rate | None]] = {}

    def rate(
        self, service: str, country: str | None, currency: str
    ) -> tuple[str | None, Rate | None]:
        key = (service, country, currency)
        found = self.found.get(key)
        if found is None:
            zone = self.table.zone_of(country)
            rate = self.table.rate(service, zone, currency) if zone else None
            found = self.found[key] = (zone, rate)
        return found


NOT_IN_SERVICE = frozenset({LineState.available.value, LineState.terminated.value})
"""Lines no usage is charged to: one in stock was never sold (no subscriber has used it), one
terminated is gone (what it held forfeited). Their records are bad (`subscriber`: not a line in
service), as Nchf answers `USER_UNKNOWN` for them. A line in grace or frozen is a subscriber's:
a record is usage that happened (most likely before the line stopped serving), charged."""


class _Line:
    __slots__ = ("account_id", "currency", "home", "id", "imsi", "key", "last_activity_at",
                 "latest", "msisdn", "pots", "serving", "shard")  # fmt: skip

    def __init__(self, row: Any) -> None:
        self.id: uuid.UUID = row.id
        self.serving = row.state not in NOT_IN_SERVICE
        self.key = str(row.id)
        self.msisdn: str = row.msisdn
        self.imsi: str | None = row.imsi
        self.currency: str = row.currency
        self.account_id: uuid.UUID | None = row.account_id
        self.last_activity_at: datetime | None = row.last_activity_at
        self.home = _home_country(row.msisdn)
        self.shard = chart.shard_of(row.id)
        self.latest: datetime | None = None
        """The latest usage charged in this chunk."""
        self.pots: LinePots | None = None


@dataclass
class ChunkOutcome:
    accepted: int = 0
    duplicates: int = 0
    unbilled_records: int = 0
    errors: _Errors = field(default_factory=_Errors)
    charged_repeats: dict[str, int] = field(default_factory=dict)
    """Records charged that repeated an id of the file (`_Chunk.firsts`): their line, by id."""


class _ChunkCharge:
    """One chunk in one transaction: see the module's docstring."""

    def __init__(
        self,
        session: AsyncSession,
        rater: _Rater,
        low_balance: int,
        *,
        charged_here: dict[str, int] | None = None,
        name: str = "line",
    ) -> None:
        self.session = session
        self.charged_here = charged_here or {}
        """Records that repeated an id in the file and were charged, by id: their line."""
        self.name = name
        """What numbers the records: `line` (a file's) or `index` (in the API's `records`)."""
        self.firsts: dict[int, bytes] = {}
        self.watched: dict[int, tuple[str, str] | None] = {}
        """The lines that riders wait for (`_Chunk.riders`), and why each was refused."""
        self.repo = UsageRepository(session)
        self.rater = rater
        self.low_balance = low_balance
        self.now = utcnow()
        self.outcome = ChunkOutcome()
        self.debited: list[tuple[Pot, uuid.UUID]] = []
        """Every pot taken from, with where its takes go (in the order first taken)."""

    def _refuse(self, line: int, name: str, detail: str) -> None:
        if line in self.watched:
            self.watched[line] = (name, detail)
        self.outcome.errors.add(line, name, detail)

    async def run(self, records: list[Record], *, look_up: bool) -> ChunkOutcome:
        """`look_up`: look for the records charged before (else they make the insert fail); a
        chunk with records that repeat an id of the file always does."""
        if isinstance(records, _Chunk):
            self.firsts = records.firsts
            self.watched = dict.fromkeys((first for _, first in records.riders), None)
        look_up = look_up or bool(self.firsts)
        known = await self.repo.charged_ids([r[2] for r in records]) if look_up else set()
        fresh = [r for r in records if r[2] not in known] if known else list(records)
        self.outcome.duplicates = len(records) - len(fresh)
        if known:
            await self._same_as_charged([r for r in records if r[2] in known])
        lines = await self._lines({r[3] for r in fresh})
        before = alerts.snapshot(
            p for ln in lines.values() if ln.pots for p in (ln.pots.wallet, *ln.pots.buckets)
        )
        # Line by line (lines share no balance), each line's records in time order (a stable
        # sort: records of the same time in file order). A line's rows written together also
        # spare PostgreSQL's index on (line_id, started_at) a jump per row.
        fresh.sort(key=_started_at)
        by_line: dict[_Line, list[Record]] = {}
        for record in fresh:
            line = lines.get(record[3])
            if line is None or line.pots is None:
                self._refuse(
                    record[0],
                    "subscriber",
                    f"{record[3]} is not one of our lines"
                    if line is None
                    else f"{record[3]} is not a line in service (in stock or terminated)",
                )
                continue
            found = by_line.get(line)
            if found is None:
                by_line[line] = [record]
            else:
                found.append(record)
        await self.repo.insert_records(self._rated(by_line))
        if isinstance(records, _Chunk):
            for rider, first in records.riders:
                refused = self.watched[first]
                if refused is None:
                    self.outcome.duplicates += 1
                else:
                    self.outcome.errors.add(rider, *refused)
        await self._post_transfers()
        charged = {ln.id: ln for ln in lines.values() if ln.latest is not None}.values()
        await self.repo.set_last_activity(
            {
                ln.id: ln.latest
                for ln in charged
                if ln.latest is not None
                and (ln.last_activity_at is None or ln.latest > ln.last_activity_at)
            }
        )
        jobs = []
        for ln in charged:
            assert ln.pots is not None
            contact = alerts.LineContact(ln.id, ln.account_id, ln.msisdn, ln.currency)
            jobs += alerts.alerts_for(
                contact, [ln.pots.wallet, *ln.pots.buckets], before, low_balance=self.low_balance
            )
        await alerts.send_alerts(self.session, jobs)
        return self.outcome

    def _slice(self) -> int:
        """How many lines' pots, or transfers, go to the ledger in one statement: on PostgreSQL
        all of them (its statements take arrays), so that every account is locked in the
        ledger's one order — slices would lock the second slice's accounts after the first's,
        whatever their order, and could deadlock with any other writer of the same accounts.
        SQLite binds each id as a parameter (at most 32,766), and has one writer at a time."""
        return _SLICE if dialect_name(self.session) != "postgresql" else 1 << 62

    async def _same_as_charged(self, again: list[Record]) -> None:
        """A record whose id was charged before is a duplicate only if it is the same record:
        the same line (by its MSISDN or its IMSI), service, quantity and start, and the country
        stored (the line's home country when none was said) or none said. Another record under
        that id is a bad record (`id`), reported and not charged — never counted as a
        duplicate. One of the file's, it names the line of the record charged under the id."""
        facts = await self.repo.charged_facts([r[2] for r in again])
        for record in again:
            found = facts.get(record[2])
            if found is None:
                continue
            if _same_as(record[3:], found):
                continue
            self.outcome.duplicates -= 1
            ext, detail = record[1], f"{record[1]} was charged before for another record"
            first = self.firsts.get(record[0])
            if first is not None:
                at = self.charged_here.get(ext)
                if at is None and _same_as(_unkept(first), found):
                    at = _line_of(first)
                if at is not None:
                    where = f"records[{at}]" if self.name == "index" else f"{self.name} {at}"
                    detail = f"{ext} is the id of another record, at {where}"
            self._refuse(record[0], "id", detail)

    async def _lines(self, subscribers: set[str]) -> dict[str, _Line]:
        """The lines named, by subscriber (`+MSISDN` or IMSI), with their pots locked."""
        msisdns = {s for s in subscribers if s[0] == "+"}
        by_id: dict[uuid.UUID, _Line] = {}
        for row in await self.repo.lines_named(msisdns, subscribers - msisdns):
            if row.id not in by_id:  # a line named both ways is found twice
                by_id[row.id] = _Line(row)
        ids = sorted(k for k, ln in by_id.items() if ln.serving)  # the others are not charged
        step = self._slice()
        for i in range(0, len(ids), step):
            for line_id, pots in (await lock_pots(self.session, ids[i : i + step])).items():
                by_id[line_id].pots = pots
        named: dict[str, _Line] = {}
        for ln in by_id.values():
            named[ln.msisdn] = ln
            if ln.imsi:
                named[ln.imsi] = ln
        return named

    def _rated(self, by_line: dict[_Line, list[Record]]) -> Iterator[tuple[Any, ...]]:
        """The usage rows of the lines' records, rated and taken from the line's pots in order:
        each pot remembers what the chunk took from it (`batch_debit`)."""
        outcome, rater, now, firsts = self.outcome, self.rater, self.now, self.firsts
        debited = self.debited
        for line, records in by_line.items():
            pots, currency, home, shard, key = (
                line.pots,
                line.currency,
                line.home,
                line.shard,
                line.key,
            )
            assert pots is not None
            wallet = pots.wallet
            for line_no, ext, rid, _, service, quantity, started_at, country in records:
                if country is None:
                    country = home
                zone, rate = rater.rate(service, country, currency)
                if rate is None:
                    self._refuse(
                        line_no,
                        "service",
                        f"no tariff for {service} in zone {zone} in {currency} (rating failed)",
                    )
                    continue
                unit = _UNITS[service]
                rated = rate.rated(quantity)
                taking = take(pots, rate, unit, rated, started_at)
                taken = []
                for pot, n in taking.from_buckets:
                    if not pot.batch_debit:
                        debited.append((pot, _counterparty(unit, False, shard)))
                    pot.batch_debit += n
                    pot.posted_balance -= n
                    taken.append(f'["{pot.ref}",{n}]')
                money = taking.wallet_money
                if money:
                    if not wallet.batch_debit:
                        debited.append((wallet, _counterparty(currency, True, shard)))
                    wallet.batch_debit += money
                    wallet.posted_balance -= money
                    taken.append(f'["{wallet.ref}",{money}]')
                if taking.short:
                    outcome.unbilled_records += 1
                outcome.accepted += 1
                if firsts and line_no in firsts:
                    outcome.charged_repeats[ext] = line_no
                if quantity:  # chargeable activity is usage: a call of 0 s is none
                    line.latest = started_at  # in time order: the latest so far
                yield (
                    rid, "batch", ext, key, service, country, zone, quantity, rated,
                    taking.bucket_units, taking.wallet_units, money, currency, taking.short,
                    f"[{','.join(taken)}]", None, started_at, now,
                )  # fmt: skip

    async def _post_transfers(self) -> None:
        """One posted transfer per pot taken from: last in the transaction, as the operator's
        accounts it credits are the hottest rows."""
        transfers = [
            NewTransfer(
                id=uuid7(),
                amount=pot.batch_debit,
                unit=pot.unit,
                debit_account_id=pot.account_id,
                credit_account_id=counterparty,
                code="usage",
                reference="batch",
            )
            for pot, counterparty in self.debited
        ]
        step = self._slice()
        for i in range(0, len(transfers), step):
            outcomes = await create_transfers(self.session, transfers[i : i + step], now=self.now)
            refused = [o for o in outcomes if not o.ok]
            if refused:
                raise RuntimeError(
                    f"the ledger refused a usage transfer: {refused[0].result.value}"
                )


_started_at = itemgetter(6)


def _same_as(record: Sequence[Any], found: tuple[Any, ...]) -> bool:
    """Whether a record (subscriber, service, quantity, start, country) is the one charged with
    `found` (`UsageRepository.charged_facts`)."""
    subscriber, service, quantity, started_at, country = record[:5]
    f_service, f_quantity, f_started_at, f_country, msisdn, imsi, f_zone = found
    if f_started_at.tzinfo is None:
        f_started_at = f_started_at.replace(tzinfo=UTC)
    if f_zone == "":
        # Its detail swept away (`SIMCHARGE_RETENTION_USAGE_DETAIL_DAYS`: no country, the start
        # cut to its UTC day): the same record if all that is left agrees — an old file
        # imported again is counted as duplicates, not refused.
        return (
            subscriber in (msisdn, imsi)
            and service == f_service
            and quantity == f_quantity
            and started_at.astimezone(UTC).date() == f_started_at.date()
        )
    return (
        subscriber in (msisdn, imsi)
        and service == f_service
        and quantity == f_quantity
        and started_at == f_started_at
        and (country is None or country == f_country)
    )


class _RecordsChargedMeanwhile(Exception):
    """A record of the chunk was recorded already: charged by an earlier import whose records
    were not looked for, or by another import at the same time."""


def _is_duplicate_record(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return bool(exc.constraint_name == "pk_usage_records")
    if isinstance(exc, IntegrityError):
        text = str(exc.orig)
        return "pk_usage_records" in text or "usage_records.id" in text
    return False


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused: its full passes over the records of a chunk (nothing
    an import builds is cyclic) cost a tenth of the import's CPU."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def import_usage_records(
    db: Database,
    settings: Settings,
    rows: Iterable[Row],
    *,
    chunk_size: int | None = None,
    indexed: bool = False,
) -> UsageReport:
    """Rate and charge usage records, a chunk per transaction. Returns what happened.

    The next chunk is read and checked in a thread while the database works on this one. The
    records already charged are looked up in the first chunk, and in the next ones only while
    some turn up: a new file skips the lookup, and if a record was charged after all the
    database refuses it (its id is the key) and the chunk runs again with the lookup.

    `indexed`: the rows are numbered by index in the API's `records` (from 0), not by line."""
    report = UsageReport()
    read_errors = _Errors()
    errors = _Errors()
    charged_here: dict[str, int] = {}
    async with db.read() as s:
        rater = _Rater(await load_rating_table(s))
    chunks = _chunks(
        rows,
        chunk_size or settings.usage_chunk_size,
        read_errors,
        latest=utcnow() + CLOCK_SKEW,
    )
    name = "index" if indexed else "line"
    look_up = True
    with _cycle_collector_paused():
        following = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
        try:
            while (chunk := await following) is not None:
                following = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
                try:
                    outcome = await _charge_chunk(
                        db, settings, rater, chunk, look_up=look_up, charged_here=charged_here,
                        name=name,
                    )  # fmt: skip
                except _RecordsChargedMeanwhile:
                    outcome = await _charge_chunk(
                        db, settings, rater, chunk, look_up=True, charged_here=charged_here,
                        name=name,
                    )  # fmt: skip
                charged_here.update(outcome.charged_repeats)
                look_up = outcome.duplicates > 0
                report.accepted += outcome.accepted
                report.duplicates += outcome.duplicates
                report.unbilled_records += outcome.unbilled_records
                errors.extend(outcome.errors)
        finally:
            # On an error, let the reading thread finish before the caller closes the file.
            await asyncio.gather(following, return_exceptions=True)
    errors.extend(read_errors)
    report.errors = [
        UsageError(record=n, field=name, detail=detail)
        if indexed
        else UsageError(line=n, field=name, detail=detail)
        for n, name, detail in sorted(errors.items)
    ]
    report.rejected = errors.count
    report.errors_not_listed = errors.count - len(errors.items)
    return report


async def _charge_chunk(
    db: Database,
    settings: Settings,
    rater: _Rater,
    chunk: list[Record],
    *,
    look_up: bool,
    charged_here: dict[str, int] | None = None,
    name: str = "line",
) -> ChunkOutcome:
    async def charge(session: AsyncSession) -> ChunkOutcome:
        try:
            return await _ChunkCharge(
                session, rater, settings.charging_low_balance, charged_here=charged_here,
                name=name,
            ).run(chunk, look_up=look_up)  # fmt: skip
        except (IntegrityError, asyncpg.UniqueViolationError) as exc:
            if not _is_duplicate_record(exc):
                raise
            if not look_up:
                raise _RecordsChargedMeanwhile from exc
            # Another import charged some of these records meanwhile: look again.
            raise RetryableError("usage records inserted concurrently") from exc

    return await db.run(charge)
