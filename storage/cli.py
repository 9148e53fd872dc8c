"""``tsdemo storage init`` and ``tsdemo storage backfill``: set up InfluxDB's schema, recompute rollups.

``deploy/cli.py`` calls ``add_parser(subparsers)`` and dispatches with ``args.func(args)``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime

from servicekit.settings import add_settings_arguments, settings_from_args
from storage.queries import InfluxQuery, InfluxQueryError
from storage.settings import InfluxSettings, parse_duration_s
from storage.setup import backfill_rollups, init_storage


def _connect(args: argparse.Namespace) -> tuple[InfluxSettings, InfluxQuery] | None:
    settings = settings_from_args(InfluxSettings, args)
    client = InfluxQuery(settings)
    url = settings.influx_url

    def progress(elapsed: float) -> None:
        print(
            f"waiting for InfluxDB at {url} ({elapsed:.0f}s of {args.wait_s:g}s)", file=sys.stderr, flush=True
        )

    if not client.wait_until_ready(args.wait_s, on_wait=progress):
        print(
            f"tsdemo: InfluxDB at {url} did not answer /ping within {args.wait_s:g}s; is it running, and is "
            f"--influx-url (TSDEMO_INFLUX_URL) right?",
            file=sys.stderr,
        )
        return None
    return settings, client


def _init(args: argparse.Namespace) -> int:
    connected = _connect(args)
    if connected is None:
        return 1
    settings, client = connected
    try:
        actions = init_storage(settings, client)
    except InfluxQueryError as exc:
        print(f"tsdemo: storage init failed: {exc}", file=sys.stderr)
        return 1
    for action in actions:
        print(action)
    if not actions:
        print(f"storage in database {settings.influx_database} is already up to date")
    return 0


def parse_time_ms(text: str, now_ms: int | None = None) -> int:
    """Epoch ms from epoch ms digits, an ISO-8601 time (UTC unless it says otherwise), or a
    duration ago such as ``6h`` or ``2d``."""
    text = text.strip()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if text.isdigit():
        return int(text)
    try:
        if re.fullmatch(r"(\d+[a-zµ]+)+", text):
            return now_ms - int(parse_duration_s(text) * 1000)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not epoch ms, an ISO-8601 time or a duration ago like 6h"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _backfill(args: argparse.Namespace) -> int:
    connected = _connect(args)
    if connected is None:
        return 1
    settings, client = connected
    until_ms = args.until if args.until is not None else int(time.time() * 1000)
    if args.since >= until_ms:
        print("tsdemo: --since must be before --until", file=sys.stderr)
        return 2
    try:
        for line in backfill_rollups(settings, args.since, until_ms, client):
            print(line)
    except (InfluxQueryError, RuntimeError) as exc:
        print(f"tsdemo: storage backfill failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait-s",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait this long for InfluxDB to answer /ping before giving up (default: 60)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``tsdemo storage {init,backfill}``."""
    storage = subparsers.add_parser(
        "storage",
        help="set up InfluxDB (database, retention policies, rollups)",
        description="Manage the InfluxDB side of the pipeline. See storage/README.md for the schema.",
    )
    commands = storage.add_subparsers(dest="storage_command", metavar="COMMAND", required=True)

    init = commands.add_parser(
        "init",
        help="create or update the database, retention policies and rollup continuous queries",
        description=(
            "Wait for InfluxDB, then create the database, the retention policies raw (default), rollup_1m\n"
            "and rollup_1h, and the continuous queries that roll device_window and site_window up to\n"
            "1 minute and 1 hour. Safe to run again: it only changes what differs from the settings."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_wait(init)
    add_settings_arguments(init, InfluxSettings)
    init.set_defaults(func=_init)

    backfill = commands.add_parser(
        "backfill",
        help="recompute the rollups over a past time range",
        description=(
            "Run each rollup continuous query's own statement over [--since, --until). Continuous\n"
            "queries only revisit the last 15 minutes (1-minute rollups) and 2 hours (hourly ones);\n"
            "use this after processing wrote windows older than that, e.g. catching up on a backlog."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backfill.add_argument(
        "--since", type=parse_time_ms, required=True, help="start: epoch ms, ISO-8601, or a duration ago (6h)"
    )
    backfill.add_argument(
        "--until", type=parse_time_ms, default=None, help="end (exclusive), same forms (default: now)"
    )
    _add_wait(backfill)
    add_settings_arguments(backfill, InfluxSettings)
    backfill.set_defaults(func=_backfill)
    return storage
