"""`make bench`: run the benchmark entries against PostgreSQL and write bench/results.json.

Every entry is compared with a baseline measured in the same run, by the same driver, at the
entry's own concurrency: `db_baseline` (raw asyncpg: one `UPDATE … RETURNING` and one `INSERT`
per transaction on a 100k-row table) or `http_baseline` (a bare ASGI endpoint doing the same,
served by uvicorn as simcharge is). Both baselines are always measured at the run's concurrency
(results.json names both), and again at any other concurrency an entry runs at
(`portal_dashboard`: 32). The machine is shared and noisy, so each baseline is measured before
and after the entries and averaged; compare ratios, not absolute figures. Each entry carries the
target its issue set; the table and results.json say whether it was met.

    python -m bench [--duration 10] [--warmup 2] [--concurrency 16] [--only ledger_transfer]
                    [--output bench/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import uvloop

from bench.driver import Measurement, drive
from bench.entries import BASELINES, ENTRIES, ONCE, BenchContext
from bench.report import Driven, build_document, render_table

RESULTS = Path(__file__).resolve().parent / "results.json"


def baselines_needed(
    entries: list[tuple[str, int]], concurrency: int
) -> list[tuple[str, int]]:
    """(baseline, concurrency) pairs to measure: both baselines at the run's concurrency, and
    each entry's baseline (`entries`: its name and concurrency) at the entry's."""
    return sorted({(b.name, concurrency) for b in BASELINES} | set(entries))


async def main(args: argparse.Namespace) -> int:
    ctx = BenchContext(
        admin_url=os.environ.get(
            "SIMCHARGE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        concurrency=args.concurrency,
    )
    unknown = set(args.only or ()) - {e.name for e in (*ENTRIES, *ONCE)}
    if unknown:
        print(f"no such entry: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    selected = [e for e in ENTRIES if not args.only or e.name in args.only]
    once = [e for e in ONCE if not args.only or e.name in args.only]
    plan = [(e, e.concurrency or args.concurrency) for e in selected]
    wanted = baselines_needed([(e.baseline, c) for e, c in plan], args.concurrency)
    print(f"preparing the bench database (concurrency {args.concurrency}) …", flush=True)
    await ctx.prepare()

    async def measure(name: str, concurrency: int) -> Measurement:
        """Build one operation (its server, its pool), drive it, and release what it built: a
        run holds one at a time, within the database server's connection limit."""
        try:
            operation = await ctx.operation(name, concurrency)
            m = await drive(
                name, operation, concurrency=concurrency, duration=args.duration,
                warmup=args.warmup,
            )
        finally:
            await ctx.release()
        print(
            f"  {name:24} @{concurrency:<3} {m.ops_per_s:10.1f} ops/s  p50 {m.p50_ms:.2f} ms"
            f"  p95 {m.percentile(95):.2f} ms  p99 {m.percentile(99):.2f} ms"
            + (f"  errors {m.errors}" if m.errors else ""),
            flush=True,
        )
        return m

    once_results = []
    try:
        before = {key: await measure(*key) for key in wanted}
        driven = [Driven(e, c, await measure(e.name, c)) for e, c in plan]
        after = {key: await measure(*key) for key in wanted}
        for entry in once:
            print(f"  {entry.name} …", flush=True)
            try:
                figures = await entry.run(ctx)
            finally:
                await ctx.release()
            print(f"  {entry.name:24} {figures}", flush=True)
            once_results.append((entry, figures))
    finally:
        await ctx.close()

    document = build_document(
        baselines={k: (before[k].ops_per_s + after[k].ops_per_s) / 2 for k in wanted},
        driven=driven,
        once=once_results,
        concurrency=args.concurrency,
        settings={
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "only": args.only or None,
        },
    )
    args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(render_table(document))
    print(f"\nwritten to {args.output}")
    return 1 if any(r["errors"] for r in document["results"]) else 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per entry")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds run before measuring")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="concurrent workers (entries without their own)"
    )
    parser.add_argument(
        "--only", nargs="*", help="entry names to run (both baselines are always measured)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the results")
    return parser.parse_args(argv)


if __name__ == "__main__":
    # uvloop, as in production (uvicorn[standard] serves on it; `simcharge worker` runs on it).
    sys.exit(uvloop.run(main(parse(sys.argv[1:]))))
