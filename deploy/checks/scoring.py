"""Scores the stored anomalies against the generator's ground-truth labels: precision and recall.

Labels are JSON lines beside the stream (one per anomalous reading and metric: device_id, metric, boot,
seq, kind, episode, ...; the format is ``servicekit.contract.labels``). Scoring is by episode: an
episode (one injected spike, frozen stretch or drift on one device and metric) is found when any
detection falls on one of its readings; a detection is right when it falls on a labelled reading.
Dropouts are readings that were never sent, so no detector can see them: they are counted but left
out of recall.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from servicekit.contract.influx import ANOMALY
from servicekit.contract.labels import UNSEEABLE_KINDS

Key = tuple[str, str, int, int]  # device_id, metric, boot, seq


@dataclass
class Score:
    detections: int = 0
    true_detections: int = 0
    episodes: dict[str, int] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    unseeable_episodes: int = 0

    @property
    def precision(self) -> float | None:
        return self.true_detections / self.detections if self.detections else None

    @property
    def recall(self) -> float | None:
        total = sum(self.episodes.values())
        return sum(self.found.values()) / total if total else None

    def as_dict(self) -> dict[str, Any]:
        per_kind = {k: {"episodes": n, "found": self.found.get(k, 0),
                        "recall": self.found.get(k, 0) / n if n else None} for k, n in sorted(self.episodes.items())}
        return {"precision": self.precision, "recall": self.recall, "detections": self.detections,
                "true_detections": self.true_detections, "per_kind": per_kind,
                "unseeable_episodes": self.unseeable_episodes}


def score(labels: Iterable[dict[str, Any]], detections: Iterable[Key]) -> Score:
    """Pure: labels as dicts, detections as (device_id, metric, boot, seq) keys."""
    episode_of: dict[Key, tuple[str, str, int]] = {}
    kinds: dict[tuple[str, str, int], str] = {}
    result = Score()
    for label in labels:
        episode = (label["device_id"], label["metric"], int(label["episode"]))
        kinds[episode] = label["kind"]
        episode_of[(label["device_id"], label["metric"], int(label["boot"]), int(label["seq"]))] = episode
    counts: dict[str, int] = defaultdict(int)
    for kind in kinds.values():
        if kind in UNSEEABLE_KINDS:
            result.unseeable_episodes += 1
        else:
            counts[kind] += 1
    result.episodes = dict(counts)
    found: set[tuple[str, str, int]] = set()
    for key in detections:
        result.detections += 1
        episode = episode_of.get(key)
        if episode is not None:
            result.true_detections += 1
            found.add(episode)
    found_counts: dict[str, int] = defaultdict(int)
    for episode in found:
        if kinds[episode] not in UNSEEABLE_KINDS:
            found_counts[kinds[episode]] += 1
    result.found = dict(found_counts)
    return result


def percent(x: float | None) -> str:
    """A precision or recall as printed: one decimal, "n/a" when there was nothing to count."""
    return "n/a" if x is None else f"{100 * x:.1f}%"


def stored_detections(query: Any, since_ms: int | None = None) -> list[Key]:
    """The anomalies processing stored, as keys; ``query`` is a storage.queries.InfluxQuery."""
    where = f" WHERE time >= {since_ms}ms" if since_ms is not None else ""
    rows = query.query(f'SELECT "boot", "seq" FROM "{ANOMALY}"{where} GROUP BY "device_id", "metric", "detector"')
    return [(r["device_id"], r["metric"], int(r["boot"]), int(r["seq"])) for r in rows]
