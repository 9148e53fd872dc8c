"""``tsdemo generate``: the fleet simulator as a container runs it."""

from __future__ import annotations

import argparse

from generators.settings import GeneratorSettings
from servicekit.service import setup_logging, stop_on_signals
from servicekit.settings import add_service_command


def _run(settings: GeneratorSettings) -> int:
    from generators.run import run

    setup_logging(settings.log_level)
    report = run(settings, stop_on_signals())
    # Non-zero when readings were sent but never acknowledged: the pipeline may hold readings the
    # ledger does not count.
    return 0 if report.unacknowledged == 0 else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_service_command(
        subparsers,
        "generate",
        "simulate a sensor fleet publishing readings over MQTT",
        GeneratorSettings,
        _run,
        description=(
            "Simulate N devices over S sites publishing readings to sensors/<site>/<device_id> at QoS 1,\n"
            "and keep a ledger of every reading the broker acknowledged (what `tsdemo verify` reads).\n"
            "With --batch > 1 readings go as arrays to sensors/<site>/gw-<site> (gateway form).\n"
            "Faults are off by default; each --*-rate turns one on (anomalies are labelled in\n"
            "--labels-path, never in the payload). --replay-path plays a CSV or JSONL file instead.\n"
            "Runs until --count readings or --duration-s seconds (or SIGTERM); exits 1 if readings\n"
            "were left unacknowledged. File formats: generators/README.md."
        ),
    )
