"""``tsdemo storage init``, ``backfill`` and ``stages``: set up InfluxDB's schema, recompute rollups, and
collect the pipeline's stage counters into it.

``deploy/cli.py`` calls ``add_parser(subparsers)`` and dispatches with ``args.func(args)``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator

from servicekit.settings import add_command_group, add_service_command
from storage.queries import InfluxQuery, InfluxQueryError
from storage.settings import InfluxSettings, parse_duration_s
from storage.setup import backfill_rollups, init_storage
from storage.stages import StagesSettings


class InitSettings(InfluxSettings):
    wait_s: float = Field(60.0, ge=0, description="wait this long for InfluxDB to answer /ping before giving up")


class BackfillSettings(InitSettings):
    since: int = Field(description="start: epoch ms, ISO-8601, or a duration ago (6h)")
    until: int | None = Field(None, description="end (exclusive), same forms (default: now)")

    @field_validator("since", "until", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return parse_time_ms(value) if isinstance(value, str) else value


def _connect(settings: InitSettings) -> InfluxQuery | None:
    client = InfluxQuery(settings)
    url = settings.influx_url

    def progress(elapsed: float) -> None:
        print(
            f"waiting for InfluxDB at {url} ({elapsed:.0f}s of {settings.wait_s:g}s)", file=sys.stderr, flush=True
        )

    if not client.wait_until_ready(settings.wait_s, on_wait=progress):
        print(
            f"tsdemo: InfluxDB at {url} did not answer /ping within {settings.wait_s:g}s; is it running, and is "
            f"--influx-url (TSDEMO_INFLUX_URL) right?",
            file=sys.stderr,
        )
        return None
    return client


def _init(settings: InitSettings) -> int:
    client = _connect(settings)
    if client is None:
        return 1
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
        raise ValueError(f"{text!r} is not epoch ms, an ISO-8601 time or a duration ago like 6h") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _backfill(settings: BackfillSettings) -> int:
    until_ms = settings.until if settings.until is not None else int(time.time() * 1000)
    if settings.since >= until_ms:
        print("tsdemo: --since must be before --until", file=sys.stderr)
        return 2
    client = _connect(settings)
    if client is None:
        return 1
    try:
        for line in backfill_rollups(settings, settings.since, until_ms, client):
            print(line)
    except (InfluxQueryError, RuntimeError) as exc:
        print(f"tsdemo: storage backfill failed: {exc}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``tsdemo storage {init,backfill,stages}``."""
    commands = add_command_group(
        subparsers, "storage", "set up InfluxDB (database, retention policies, rollups); collect the stage counters",
        "Manage the InfluxDB side of the pipeline. See storage/README.md for the schema.")
    add_service_command(
        commands, "init", "create or update the database, retention policies and rollup continuous queries",
        InitSettings, _init, description=(
            "Wait for InfluxDB, then create the database, the retention policies raw (default), rollup_1m\n"
            "and rollup_1h, and the continuous queries that roll device_window and site_window up to\n"
            "1 minute and 1 hour. Safe to run again: it only changes what differs from the settings."))
    add_service_command(
        commands, "backfill", "recompute the rollups over a past time range", BackfillSettings, _backfill,
        description=(
            "Run each rollup continuous query's own statement over [--since, --until). Continuous\n"
            "queries only revisit the last 15 minutes (1-minute rollups) and 2 hours (hourly ones);\n"
            "use this after processing wrote windows older than that, e.g. catching up on a backlog."))
    add_service_command(
        commands, "stages", "write the pipeline's stage counters (the services' own) into InfluxDB",
        StagesSettings, _stages, description=(
            "Every --stages-interval-s, read each stage's Prometheus counter from the services that keep it\n"
            "(published: the generators; bridged and rejected: the bridges; stored: the Spark job), summed\n"
            "over their instances, and write them as the `stage` measurement the pipeline dashboard shows.\n"
            "Runs until SIGTERM; the local stack, compose and Kubernetes each run one."))


def _stages(settings: StagesSettings) -> int:
    from servicekit.service import setup_logging, stop_on_signals
    from storage.stages import run_collector

    setup_logging(settings.log_level)
    return run_collector(settings, stop_on_signals())
