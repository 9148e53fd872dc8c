"""``tsdemo dashboards generate``, ``provision`` and ``snapshot``.

``deploy/cli.py`` calls ``add_parser(subparsers)`` and dispatches with ``args.func(args)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from servicekit.settings import add_settings_arguments, settings_from_args


def _generate(args: argparse.Namespace) -> int:
    from dashboards import provisioning

    out: Path = args.out
    try:
        if args.check:
            stale = provisioning.stale(out)
            for line in stale:
                print(f"{out / line}", file=sys.stderr)
            if stale:
                print("tsdemo: the provisioning files differ from the code; run `tsdemo dashboards generate`",
                      file=sys.stderr)
                return 1
            print(f"{out} is up to date")
            return 0
        written = provisioning.write(out)
    except provisioning.InvalidDashboardError as exc:
        print(f"tsdemo: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    leftover = [line for line in provisioning.stale(out) if line.endswith("(not generated)")]
    for line in leftover:
        print(f"tsdemo: {out / line.removesuffix(' (not generated)')} is not generated any more; remove it",
              file=sys.stderr)
    return 0


def _provision(args: argparse.Namespace) -> int:
    from dashboards.grafana_api import ProvisionError, provision
    from dashboards.settings import GrafanaSettings

    settings = settings_from_args(GrafanaSettings, args)
    try:
        provision(settings, say=lambda line: print(line, flush=True))
    except ProvisionError as exc:
        print(f"tsdemo: {exc}", file=sys.stderr)
        return 1
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from dashboards.snapshot import InfluxUnreachableError, SnapshotSettings, snapshot

    settings = settings_from_args(SnapshotSettings, args)
    try:
        snapshot(settings, say=lambda line: print(line, flush=True))
    except InfluxUnreachableError as exc:
        print(f"tsdemo: {exc}; is the stack up (`tsdemo status`)? Point --influx-url (TSDEMO_INFLUX_URL) at it",
              file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"tsdemo: {exc}", file=sys.stderr)
        return 2
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``tsdemo dashboards {generate,provision,snapshot}``."""
    from dashboards.settings import COMMITTED, GrafanaSettings
    from dashboards.snapshot import SnapshotSettings

    dashboards = subparsers.add_parser(
        "dashboards",
        help="Grafana dashboards and alert rules: write the provisioning files, or push them to a Grafana",
        description="Grafana dashboards, datasource and alert rules, built in Python (see dashboards/README.md).",
    )
    commands = dashboards.add_subparsers(dest="dashboards_command", metavar="COMMAND", required=True)

    generate = commands.add_parser(
        "generate",
        help="write the provisioning tree (datasources/, dashboards/, alerting/) Grafana reads",
        description=(
            "Write Grafana's provisioning tree from the code: datasources/tsdemo-influxdb.yaml,\n"
            "dashboards/tsdemo-provider.yaml with one JSON file per dashboard, and alerting/tsdemo-rules.yaml.\n"
            "Mount the directory as /etc/grafana/provisioning. The datasource reads TSDEMO_INFLUX_URL,\n"
            "TSDEMO_INFLUX_DATABASE, TSDEMO_INFLUX_USERNAME and TSDEMO_INFLUX_PASSWORD from Grafana's environment."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument("--out", type=Path, default=COMMITTED, metavar="DIR",
                          help=f"directory to write (default: {COMMITTED})")
    generate.add_argument("--check", action="store_true",
                          help="write nothing; exit 1 when DIR differs from what the code generates")
    generate.set_defaults(func=_generate)

    provision = commands.add_parser(
        "provision",
        help="create or update the datasource, folder, dashboards and alert rules in a running Grafana",
        description=(
            "Wait for Grafana's /api/health, then create or update, through its HTTP API, the InfluxDB\n"
            "datasource, the tsdemo folder, the dashboards and the alert rules. Safe to run again: only\n"
            "what is missing or different is written. Objects that Grafana got from the provisioning\n"
            "files are left to them (the command says so)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(provision, GrafanaSettings)
    provision.set_defaults(func=_provision)

    snapshot = commands.add_parser(
        "snapshot",
        help="draw each dashboard's time-series panels from InfluxDB into PNGs (no Grafana needed)",
        description=(
            "Run each dashboard's time-series panel queries, variables and $timeFilter/$__interval filled\n"
            "in as Grafana would, against InfluxDB, and draw them: one PNG per dashboard (DIR/<uid>.png),\n"
            "panels in a grid, over the last --time-range. Variables: --var NAME=VALUE, else All where the\n"
            "variable offers it, else its first value. Prints each panel's series and points; exits 1 when\n"
            "InfluxDB cannot be reached. Example: tsdemo dashboards snapshot --out /tmp/shots --time-range 30m"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(snapshot, SnapshotSettings)
    snapshot.set_defaults(func=_snapshot)
    return dashboards
