"""``tsdemo generate``: the fleet simulator as a container runs it."""

from __future__ import annotations

import argparse

from generators.settings import GeneratorSettings
from servicekit.service import setup_logging, stop_on_signals
from servicekit.settings import add_service_command


def _run(settings: GeneratorSettings) -> int:
    from generators.run import run_generator

    setup_logging(settings.log_level)
    run_generator(settings, stop_on_signals())
    return 0


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
            "With --batch > 1 readings go as arrays to sensors/<site>/gw-<site> (gateway form)."
        ),
    )
