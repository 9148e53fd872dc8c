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


def _score(settings: object) -> int:
    import json
    import sys

    from processing.scoring import score, stored_detections
    from servicekit.contract.labels import read_labels
    from storage.queries import InfluxQuery

    try:
        labels = read_labels(settings.labels_path)
    except FileNotFoundError as exc:
        print(f"tsdemo anomalies score: {exc}", file=sys.stderr)
        return 2
    since = min((int(label["ts"]) for label in labels), default=None)
    result = score(labels, stored_detections(InfluxQuery(settings), since_ms=since)).as_dict()
    if settings.json_output:
        print(json.dumps(result, indent=2))
        return 0

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    print(f"precision {pct(result['precision'])} ({result['true_detections']} of {result['detections']} "
          f"detections on labelled readings), recall {pct(result['recall'])} of episodes")
    for kind, k in result["per_kind"].items():
        print(f"  {kind:<8} {k['found']:>5} of {k['episodes']:>5} episodes found ({pct(k['recall'])})")
    if result["unseeable_episodes"]:
        print(f"  ({result['unseeable_episodes']} dropout episodes: readings never sent, left out of recall)")
    return 0


def add_score_parser(subparsers: argparse._SubParsersAction) -> None:
    from pathlib import Path

    from pydantic import Field

    from storage.settings import InfluxSettings

    class ScoreSettings(InfluxSettings):
        labels_path: Path = Field(Path(".tsdemo/ledger/labels.jsonl"),
                                  description="the generator's anomaly labels (JSONL)")
        json_output: bool = Field(False, description="print the scores as JSON")

    group = subparsers.add_parser("anomalies", help="anomaly detection: score against ground truth")
    sub = group.add_subparsers(dest="anomalies_command", metavar="COMMAND", required=True)
    add_service_command(sub, "score", "precision and recall of the stored anomalies against the labels",
                        ScoreSettings, _score)
    try:  # the offline evaluation renders the fleet with the generator, which the processing image lacks
        from processing.detector_eval import add_parser as add_evaluate_parser

        add_evaluate_parser(sub)
    except ModuleNotFoundError as exc:
        sub.add_parser("evaluate", help=f"(not installed: needs tsdemo[generator], missing {exc.name})")
