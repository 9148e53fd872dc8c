"""``tsdemo process``: the Spark job as a container (or spark-submit) runs it."""

from __future__ import annotations

import argparse

from processing.settings import ProcessingSettings
from servicekit.service import long_running
from servicekit.settings import add_service_command


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_service_command(
        subparsers,
        "process",
        "run the Spark Structured Streaming job (Kafka -> windows -> InfluxDB)",
        ProcessingSettings,
        long_running("processing.job:run_job"),
        description=(
            "Read sensor-readings from Kafka, validate (invalid readings go to the DLQ with a reason),\n"
            "deduplicate on (device_id, boot, seq), aggregate per device and metric in event-time windows\n"
            "and write them, with the site windows derived from them, to InfluxDB. Restart-safe: state\n"
            "and offsets live in the checkpoint, and every write is an idempotent overwrite."
        ),
    )
