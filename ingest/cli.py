"""``tsdemo ingest``: the MQTT to Kafka bridge as a container runs it."""

from __future__ import annotations

import argparse

from ingest.settings import BridgeSettings
from servicekit.service import long_running
from servicekit.settings import add_service_command


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_service_command(
        subparsers,
        "ingest",
        "bridge MQTT readings into Kafka (at-least-once, ordered acks)",
        BridgeSettings,
        long_running("ingest.bridge:run_bridge"),
        description=(
            "Subscribe to $share/<group>/sensors/# (MQTT 5, persistent session) and forward each payload\n"
            "unchanged to Kafka, keyed by the topic's last segment; acknowledge MQTT only after Kafka.\n"
            "Run several with different --client-id values to split the load; restart each under its own\n"
            "--client-id: the broker keeps that instance's share of the messages in its session meanwhile."
        ),
    )
