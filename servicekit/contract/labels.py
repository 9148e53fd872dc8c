"""The ground-truth anomaly label file: JSON lines the generator writes beside the stream and the checks
(``tsdemo anomalies score``, the detector harness) read back.

One line per anomalous reading and metric (a dropout labels every metric of the reading it suppressed),
with exactly ``LABEL_FIELDS``; ``episode`` numbers one injected spike, frozen stretch, drift or dropout
on one device and metric. Format: generators/README.md, "Anomaly labels".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

LABEL_FIELDS = ("device_id", "site", "type", "metric", "boot", "seq", "ts", "kind", "value", "normal", "episode")
#: kinds no detector can see: a dropout is a reading that was never sent
UNSEEABLE_KINDS = frozenset({"dropout"})


def label_lines(labels: Iterable[dict[str, Any]]) -> str:
    """The file's text for ``labels``: one compact JSON object per line."""
    return "".join(json.dumps(label, separators=(",", ":")) + "\n" for label in labels)


def read_labels(path: Path) -> list[dict[str, Any]]:
    """The labels in a file, one dict per line; a clear error when there is no file."""
    if not path.exists():
        raise FileNotFoundError(f"no labels at {path}: run the generator with --anomaly-rate > 0")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
