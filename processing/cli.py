"""``tsdemo process``: the Spark job as a container (or spark-submit) runs it."""

from __future__ import annotations

import argparse

from processing.settings import ProcessingSettings
from servicekit.service import setup_logging, stop_on_signals
from servicekit.settings import add_service_command


def _run(settings: ProcessingSettings) -> int:
    from processing.job import run_job

    setup_logging(settings.log_level)
    return run_job(settings, stop_on_signals())


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_service_command(
        subparsers,
        "process",
        "run the Spark Structured Streaming job (Kafka -> windows -> InfluxDB)",
        ProcessingSettings,
        _run,
        description=(
            "Read sensor-readings from Kafka, validate (invalid readings go to the DLQ with a reason),\n"
            "deduplicate on (device_id, boot, seq), aggregate per device and metric in event-time windows\n"
            "and write them, with the site windows derived from them, to InfluxDB. Restart-safe: state\n"
            "and offsets live in the checkpoint, and every write is an idempotent overwrite."
        ),
    )
