"""Ground-truth labels of injected anomalies, written beside the stream as JSON lines.

One line per anomalous reading and metric (a dropout labels every metric of the reading it
suppressed), written when the broker acknowledged the reading (a dropout: when it was suppressed),
so the file holds exactly the anomalies the pipeline was given. The payload itself never says a
reading is anomalous. Format: generators/README.md, "Anomaly labels".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LABEL_FIELDS = ("device_id", "site", "type", "metric", "boot", "seq", "ts", "kind", "value", "normal", "episode")


class LabelWriter:
    """Appends labels to a JSONL file (a restarted generator adds to it: its readings carry a new boot)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.written = 0
        self._lock = threading.Lock()
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)

    def write(self, labels: list[dict[str, Any]]) -> None:
        if not labels:
            return
        with self._lock:
            self.written += len(labels)
            if self._file is not None:
                self._file.write("".join(json.dumps(label, separators=(",", ":")) + "\n" for label in labels))

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_labels(path: Path) -> Iterator[dict[str, Any]]:
    """The labels in a file, one dict per line."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
