"""Ground-truth labels of injected anomalies, written beside the stream as JSON lines.

One line per anomalous reading and metric (a dropout labels every metric of the reading it
suppressed), written when the broker acknowledged the reading (a dropout: when it was suppressed),
so the file holds exactly the anomalies the pipeline was given. The payload itself never says a
reading is anomalous. The format is the contract's (``servicekit.contract.labels``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from servicekit.contract.labels import label_lines


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
                self._file.write(label_lines(labels))

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

