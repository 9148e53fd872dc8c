"""``tsdemo anomalies score`` and ``tsdemo anomalies evaluate``: the detectors judged against ground truth,
on what a running pipeline stored (score) or offline on a simulated fleet (evaluate)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from servicekit.settings import PrintsResults, add_command_group, add_service_command
from storage.settings import InfluxSettings


class ScoreSettings(InfluxSettings, PrintsResults):
    labels_path: Path = Field(Path(".tsdemo/ledger/labels.jsonl"), description="the generator's anomaly labels (JSONL)")


def _score(settings: ScoreSettings) -> int:
    from deploy.checks.scoring import percent, score, stored_detections
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
    print(f"precision {percent(result['precision'])} ({result['true_detections']} of {result['detections']} "
          f"detections on labelled readings), recall {percent(result['recall'])} of episodes")
    for kind, k in result["per_kind"].items():
        print(f"  {kind:<8} {k['found']:>5} of {k['episodes']:>5} episodes found ({percent(k['recall'])})")
    if result["unseeable_episodes"]:
        print(f"  ({result['unseeable_episodes']} dropout episodes: readings never sent, left out of recall)")
    return 0


def _evaluate(settings: Any) -> int:
    from deploy.checks.detector_eval import evaluate, print_examples, print_report, report

    ev = evaluate(settings)
    r = report(ev)
    if settings.json_output:
        print(json.dumps(r, indent=2))
    else:
        print_report(r)
        print_examples(ev, settings.examples)
    return 0


EVALUATE_DESCRIPTION = (
    "Run the anomaly detectors offline on a seeded fleet rendered by the real generator (faults,\n"
    "labels, out-of-order and duplicate readings as a live run sends them), fed as the Spark job's\n"
    "anomaly query would feed them, and score them against the labels: precision and recall per\n"
    "detector and anomaly kind, and the false positives by cause. No broker, Kafka or Spark.\n"
    "The clock is synthetic: a device reads every --devices / --rate seconds (the defaults are the\n"
    "e2e scoring run's fleet; --rate 0.1 makes it one reading a minute, through the daily cycle)."
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``tsdemo anomalies {score,evaluate}``."""
    from deploy.checks.detector_eval import EvaluateSettings

    commands = add_command_group(subparsers, "anomalies", "anomaly detection: score against ground truth")
    add_service_command(commands, "score", "precision and recall of the stored anomalies against the labels",
                        ScoreSettings, _score)
    add_service_command(commands, "evaluate", "precision and recall of the detectors on a simulated fleet, offline",
                        EvaluateSettings, _evaluate, description=EVALUATE_DESCRIPTION)
