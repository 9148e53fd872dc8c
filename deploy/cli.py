"""The ``tsdemo`` command: each service alone (as its container runs it), the local stack, verify."""

from __future__ import annotations

import argparse
import sys

from servicekit.settings import ENV_PREFIX


def build_parser() -> argparse.ArgumentParser:
    from dashboards import cli as dashboards_cli
    from deploy import verify
    from deploy.local import commands as local_commands
    from generators import cli as generate_cli
    from ingest import cli as ingest_cli
    from processing import cli as process_cli
    from storage import cli as storage_cli

    parser = argparse.ArgumentParser(
        prog="tsdemo",
        description=(
            "Time-series IoT demo: a simulated sensor fleet -> MQTT -> Kafka -> Spark -> InfluxDB -> Grafana.\n"
            f"Every option can also be set by the {ENV_PREFIX}* environment variable named in its help."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    local_commands.add_parsers(sub)
    generate_cli.add_parser(sub)
    ingest_cli.add_parser(sub)
    process_cli.add_parser(sub)
    process_cli.add_score_parser(sub)
    storage_cli.add_parser(sub)
    dashboards_cli.add_parser(sub)
    verify.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import signal

    # `tsdemo status --json | head` should end quietly, like any Unix tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
