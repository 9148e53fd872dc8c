"""The generator's ledger: what was published and acknowledged by the broker, per device and metric.

It is the ground truth ``tsdemo verify`` compares with InfluxDB. Counts are bucketed by the event
time's minute so that a live stack can be checked up to a settled cutoff, and the file is
rewritten atomically so a reader never sees half of it. A reading enters the ledger only once the
broker has acknowledged it (PUBACK at QoS 1): that is the moment the pipeline owns it.

Each reading id (device_id, boot, seq) is counted once however often it was sent. Readings sent
further behind the stream's newest event time than the late threshold go to the ``late`` section
instead of the expected counts (the pipeline's watermark may drop them); malformed payloads and
duplicate copies are only counted in the header. Per-minute buckets older than ``detail_ms``
behind the newest event time are merged into one bucket per series, keyed by the start of the last
minute it covers, so the file stays small on long runs while any cutoff from ``merged_before_ms`` on
still counts exactly. The file's shape, and its reader, are the contract's (``servicekit.contract.ledger``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import repeat
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import Any

from servicekit.contract.ledger import BUCKET_MS, LEDGER_VERSION

#: Per-minute detail kept for this long; ``tsdemo verify``'s settle time must stay well below it.
DETAIL_MS = 5 * 60_000
#: Merging re-renders every device, so it waits until the horizon has moved this far: a series
#: holds at most (DETAIL_MS + COMPACT_STEP_MS) / BUCKET_MS + 1 buckets.
COMPACT_STEP_MS = 5 * 60_000


Buckets = dict[int, int]


class _Device:
    """One device's share of the ledger, with its JSON text cached until it changes.

    Counts are keyed by the tuple of a reading's metric names: a reading counts once for all its
    metrics, which keeps a device at one small dict of buckets instead of one per metric.
    """

    __slots__ = ("site", "type", "boot", "counts", "late", "text", "late_text")

    def __init__(self, site: str, dtype: str, boot: int) -> None:
        self.site = site
        self.type = dtype
        self.boot = boot
        self.counts: dict[tuple[str, ...], Buckets] = {}
        self.late: dict[tuple[str, ...], Buckets] | None = None
        self.text = ""
        self.late_text = ""

    @staticmethod
    def _per_metric(table: dict[tuple[str, ...], Buckets]) -> dict[str, dict[str, int]]:
        if len(table) == 1:
            ((names, buckets),) = table.items()
            shared = {str(b): n for b, n in buckets.items()}
            return dict.fromkeys(names, shared)  # one dict, written once per metric
        out: dict[str, dict[str, int]] = {}
        for names, buckets in table.items():
            for metric in names:
                target = out.setdefault(metric, {})
                for b, n in buckets.items():
                    target[str(b)] = target.get(str(b), 0) + n
        return out

    def render(self, dev_id: str) -> None:
        key = json.dumps(dev_id)
        body = {"site": self.site, "type": self.type, "boot": self.boot, "metrics": self._per_metric(self.counts)}
        self.text = f"{key}:{json.dumps(body, separators=(',', ':'))}"
        late = self._per_metric(self.late) if self.late else None
        self.late_text = "" if late is None else f"{key}:{json.dumps(late, separators=(',', ':'))}"


def _merge_old(table: dict[tuple[str, ...], Buckets] | None, boundary: int) -> bool:
    """Folds buckets before ``boundary`` into one keyed by the last minute before it; True if any moved."""
    changed = False
    key = boundary - BUCKET_MS
    for buckets in (table or {}).values():
        old = [b for b in buckets if b < boundary]
        if len(old) > 1 or (old and old[0] != key):
            total = sum(buckets.pop(b) for b in old)
            buckets[key] = buckets.get(key, 0) + total
            changed = True
    return changed


#: (device_id, site, type, boot): what ``note_sent`` keeps of a reading.
BootKey = tuple[str, str, str, int]
#: (device_id, site, type, boot, event time, metric names, late): what ``record`` counts a reading under.
CountKey = tuple[str, str, str, int, int, tuple[str, ...], bool]
_DEVICE_ID, _SITE, _TYPE, _TS, _METRICS = map(itemgetter, ("device_id", "site", "type", "ts", "metrics"))
_BOOT = methodcaller("get", "boot", 0)


def boot_keys(readings: list[dict[str, Any]]) -> set[BootKey]:
    """The distinct boot keys of ``readings``."""
    return set(zip(map(_DEVICE_ID, readings), map(_SITE, readings), map(_TYPE, readings), map(_BOOT, readings),
                   strict=True))


def count_keys(readings: list[dict[str, Any]], late: bool = False) -> Counter[CountKey]:
    """How many of ``readings`` share each count key. The grouping runs in C (a fleet's pass stamps its
    readings with one time, so a batch of acknowledgements holds a few keys per device): the same cost
    as a Python step per reading into the ledger, and a worker process ships the keys, not the readings."""
    return Counter(zip(map(_DEVICE_ID, readings), map(_SITE, readings), map(_TYPE, readings), map(_BOOT, readings),
                       map(_TS, readings), map(tuple, map(_METRICS, readings)), repeat(late), strict=False))


def plain_boot_keys(readings: list[dict[str, Any]]) -> set[BootKey]:
    """``boot_keys`` of a fault-free fleet's plain readings (``Message.plain``), which hold one boot per
    device: read off one reading of each device (5x cheaper, and this runs for every reading sent)."""
    return {(dev_id, r["site"], r["type"], r.get("boot", 0)) for dev_id, r in _one_each(readings).items()}


def plain_count_keys(readings: list[dict[str, Any]]) -> Counter[CountKey]:
    """``count_keys`` of a fault-free fleet's plain readings, which hold one boot and one set of metric
    names per device: counted by device and event time (by device alone when, as within one of the
    fleet's passes, they share one time), the rest read off one reading of each device. 3-4x cheaper
    than ``count_keys``, which builds and hashes a 7-tuple per reading."""
    counts: Counter[CountKey] = Counter()
    if not readings:
        return counts
    stamps = set(map(_TS, readings))
    if len(stamps) == 1:
        (ts,) = stamps
        pairs: Mapping[tuple[str, int], int] = {(d, ts): n for d, n in Counter(map(_DEVICE_ID, readings)).items()}
    else:
        pairs = Counter(zip(map(_DEVICE_ID, readings), map(_TS, readings), strict=True))
    one = _one_each(readings)
    for (dev_id, ts), n in pairs.items():
        r = one[dev_id]
        counts[(dev_id, r["site"], r["type"], r.get("boot", 0), ts, tuple(r["metrics"]), False)] += n
    return counts


def _one_each(readings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return dict(zip(map(_DEVICE_ID, readings), readings, strict=True))


class Ledger:
    """Thread-safe counters, flushed to a JSON file; reloaded on restart so counts and boots carry on.

    The file is assembled from per-device JSON fragments re-rendered only for devices that changed
    since the last flush, so a large, mostly idle fleet costs little to rewrite.
    """

    def __init__(self, path: Path | None, *, late_threshold_ms: int | None = None, detail_ms: int = DETAIL_MS):
        self.path = path
        self.late_threshold_ms = late_threshold_ms
        self.detail_ms = detail_ms
        self._lock = threading.Lock()
        self._devices: dict[str, _Device] = {}
        self._dirty: set[str] = set()
        self._names: dict[tuple[str, ...], tuple[str, ...]] = {}
        # One int object per bucket start, shared by every device (saves ~30 MB at 100,000 devices).
        self._buckets: dict[int, int] = {}
        self._merged_before = 0
        self._newest_ts = 0
        self.published = 0
        self.late_published = 0
        self.malformed_sent = 0
        self.duplicates_sent = 0
        self.messages_acked = 0
        self.unacknowledged = 0
        self.complete = False
        if path is not None and path.exists():
            self._load(path)

    @staticmethod
    def _table(metrics: dict[str, Any]) -> dict[tuple[str, ...], Buckets]:
        parsed = {m: {int(b): int(n) for b, n in bk.items()} for m, bk in metrics.items()}
        groups: dict[tuple[tuple[int, int], ...], list[str]] = {}
        for m, bk in parsed.items():
            groups.setdefault(tuple(sorted(bk.items())), []).append(m)
        # Metrics with identical counts (all of a device's, normally) share one entry again.
        return {tuple(ms): dict(items) for items, ms in groups.items()}

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text())
        if data.get("version") != LEDGER_VERSION:
            raise ValueError(f"{path}: unsupported ledger version {data.get('version')!r}")
        self.published = int(data["published"])
        for name in ("late_published", "malformed_sent", "duplicates_sent", "messages_acked"):
            setattr(self, name, int(data.get(name, 0)))
        self._merged_before = int(data.get("merged_before_ms", 0))
        late = data.get("late", {})
        for dev_id, d in data["devices"].items():
            dev = self._devices[dev_id] = _Device(d["site"], d["type"], int(d.get("boot", 0)))
            dev.counts = self._table(d["metrics"])
            if dev_id in late:
                dev.late = self._table(late[dev_id])
            self._dirty.add(dev_id)

    def previous_boot(self, device_id: str) -> int | None:
        """The highest boot this device sent readings under, or None if the ledger never saw it."""
        dev = self._devices.get(device_id)
        return None if dev is None else dev.boot

    def note_sent(self, readings: list[dict[str, Any]]) -> None:
        """Remember the boot of readings handed to the broker, acknowledged or not, so that a restart
        never reuses a (device_id, boot, seq) the pipeline may have seen."""
        self.note_boots(boot_keys(readings))

    def note_boots(self, keys: Iterable[BootKey]) -> None:
        """``note_sent`` for (device_id, site, type, boot) keys (what a generator's worker process ships)."""
        with self._lock:
            for key in keys:
                self._note(key)

    def _note(self, key: BootKey) -> _Device:
        dev_id, site, dtype, boot = key
        dev = self._devices.get(dev_id)
        if dev is None:
            dev = self._devices[dev_id] = _Device(site, dtype, boot)
            self._dirty.add(dev_id)
        elif boot > dev.boot:
            dev.boot = boot
            self._dirty.add(dev_id)
        return dev

    def record(self, readings: list[dict[str, Any]], late: bool = False) -> None:
        """Count acknowledged readings, each once; ``late`` ones go to the late section."""
        self.add_counts(count_keys(readings, late))

    def add_counts(self, counts: Mapping[CountKey, int]) -> None:
        """Count acknowledged readings given as how many share each (device, site, type, boot, event time,
        metric names, late) key: ``record``'s work, and what a worker process ships."""
        with self._lock:
            merged = self._merged_before
            dirty = self._dirty
            for (dev_id, site, dtype, boot, ts, names, late), n in counts.items():
                dev = self._note((dev_id, site, dtype, boot))
                names = self._names.setdefault(names, names)
                if ts > self._newest_ts:
                    self._newest_ts = ts
                bucket = ts - ts % BUCKET_MS
                if bucket < merged:
                    bucket = merged - BUCKET_MS
                bucket = self._buckets.setdefault(bucket, bucket)
                if late:
                    if dev.late is None:
                        dev.late = {}
                    table = dev.late
                else:
                    table = dev.counts
                buckets = table.get(names)
                if buckets is None:
                    buckets = table[names] = {}
                buckets[bucket] = buckets.get(bucket, 0) + n
                dirty.add(dev_id)
                self.published += n
                if late:
                    self.late_published += n

    def count_extra(self, *, malformed: int = 0, duplicates: int = 0, messages: int = 0) -> None:
        """Acknowledged sends that are not new readings: malformed payloads, duplicate copies; and messages."""
        with self._lock:
            self.malformed_sent += malformed
            self.duplicates_sent += duplicates
            self.messages_acked += messages

    def _compact(self) -> None:
        # Measured from the newest event time rather than the wall clock, so a replay of old data
        # keeps its detail too.
        boundary = self._newest_ts - self.detail_ms
        boundary -= boundary % BUCKET_MS
        if boundary < self._merged_before + COMPACT_STEP_MS:
            return
        for dev_id, dev in self._devices.items():
            if _merge_old(dev.counts, boundary) | _merge_old(dev.late, boundary):
                self._dirty.add(dev_id)
        self._merged_before = boundary
        self._buckets = {b: b for b in self._buckets if b >= boundary}

    def text(self) -> str:
        """The ledger file's content: JSON, header first."""
        now_ms = int(time.time() * 1000)
        with self._lock:
            self._compact()
            for dev_id in self._dirty:
                self._devices[dev_id].render(dev_id)
            self._dirty.clear()
            header = {
                "version": LEDGER_VERSION,
                "bucket_ms": BUCKET_MS,
                "published": self.published,
                "complete": self.complete,
                "updated_ms": now_ms,
                "late_published": self.late_published,
                "late_threshold_ms": self.late_threshold_ms,
                "malformed_sent": self.malformed_sent,
                "duplicates_sent": self.duplicates_sent,
                "messages_acked": self.messages_acked,
                "unacknowledged": self.unacknowledged,
                "merged_before_ms": self._merged_before,
            }
            devices = ",".join(d.text for d in self._devices.values())
            late = ",".join(d.late_text for d in self._devices.values() if d.late_text)
        head = json.dumps(header, separators=(",", ":"))
        return f'{head[:-1]},"devices":{{{devices}}},"late":{{{late}}}}}'

    def snapshot(self) -> dict[str, Any]:
        """The ledger as the file has it (header, ``devices`` and ``late``)."""
        return json.loads(self.text())

    def flush(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.text())
        os.replace(tmp, self.path)
