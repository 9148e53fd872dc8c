"""What leaves the generator: items (a reading, a duplicate copy, a malformed payload) and the MQTT
messages they are batched into.

A message is built at the moment it is handed to the publisher, in send order, which is when each
reading is judged late or not: a reading whose event time is more than ``late_threshold_ms`` behind
the newest event time already sent is what the pipeline's watermark would drop, so the ledger keeps
it apart (see generators/README.md, "The ledger").
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field
from typing import Any

from servicekit.contract import encode, topic_for

#: A gateway sends a partial batch after this long, so a slow fleet still reports promptly.
BATCH_MAX_AGE_S = 1.0


class CopyGroup:
    """Shared by the copies of a reading that was sent more than once: the first acknowledged counts."""

    __slots__ = ("counted",)

    def __init__(self) -> None:
        self.counted = False


@dataclass(slots=True, eq=False)
class Item:
    """One unit of output. Exactly one of: a reading; a malformed ``payload``; a dropped reading
    (neither, only ``labels``: an anomaly that suppressed the reading)."""

    reading: dict[str, Any] | None = None
    payload: bytes | None = None
    #: where a malformed payload goes (readings go to their device's or gateway's topic)
    topic: str | None = None
    #: anomaly labels to write once this reading is acknowledged (or at once, for a dropped one)
    labels: list[dict[str, Any]] | None = None
    #: set on every copy of a reading that is sent twice
    group: CopyGroup | None = None
    #: this item is the extra copy (for counting duplicate sends)
    copy: bool = False
    #: decided when the item's message is built
    late: bool = False

    @property
    def dropped(self) -> bool:
        return self.reading is None and self.payload is None


@dataclass(slots=True, eq=False)
class Message:
    topic: str
    payload: bytes
    items: list[Item]
    #: In place of ``items``: readings of a fault-free fleet, none late, each sent once and without
    #: labels, so nothing is decided per reading when they are acknowledged. An ``Item`` per reading
    #: cost a fifth of the fast path's time.
    plain: list[dict[str, Any]] | None = None

    @property
    def readings(self) -> int:
        if self.plain is not None:
            return len(self.plain)
        return sum(1 for i in self.items if i.reading is not None)


def _gateway_topic(site: str) -> str:
    return topic_for(site, f"gw-{site}")


_ONLY_DICTS = {dict}
_event_time = operator.itemgetter("ts")

#: What a gateway buffer holds: an item, or a bare reading of a fault-free fleet.
Entry = Item | dict[str, Any]


@dataclass
class Batcher:
    """Groups reading items into messages: one per reading, or a gateway array per site of ``batch``.

    Malformed payloads always travel alone, on their device's topic, so a broken payload never takes
    good readings in the same message down with it.
    """

    batch: int
    late_threshold_ms: int
    max_age_s: float = BATCH_MAX_AGE_S
    clock: Any = time.monotonic
    newest_ts: int | None = None
    _buffers: dict[str, list[Entry]] = field(default_factory=dict)
    _born: dict[str, float] = field(default_factory=dict)

    def add(self, items: list[Item]) -> list[Message]:
        """Messages complete after adding ``items`` (dropped items are ignored: nothing to send)."""
        out: list[Message] = []
        for item in items:
            if item.payload is not None:
                out.append(Message(item.topic or "", item.payload, [item]))
            elif item.reading is not None:
                self._put(item.reading, item, out)
        return out

    def add_plain(self, readings: list[dict[str, Any]]) -> list[Message]:
        """``add`` for the bare readings of a fault-free fleet (``Message.plain``). They are grouped by
        site first and cut into batches by slicing: a step per reading less than ``add``, whose
        per-reading work was a third of the fast path's batching time."""
        if self.batch == 1:
            return [self._message(topic_for(r["site"], r["device_id"]), [r]) for r in readings]
        by_site: dict[str, list[Entry]] = {}
        for r in readings:
            site = r["site"]
            group = by_site.get(site)
            if group is None:
                by_site[site] = [r]
            else:
                group.append(r)
        out: list[Message] = []
        for site, group in by_site.items():
            self._buffer(site).extend(group)
            self._cut(site, out)
        return out

    def _put(self, reading: dict[str, Any], item: Item, out: list[Message]) -> None:
        if self.batch == 1:
            out.append(self._message(topic_for(reading["site"], reading["device_id"]), [item]))
            return
        site = reading["site"]
        self._buffer(site).append(item)
        self._cut(site, out)

    def _buffer(self, site: str) -> list[Entry]:
        buf = self._buffers.get(site)
        if buf is None:
            buf = self._buffers[site] = []
            self._born[site] = self.clock()
        return buf

    def _cut(self, site: str, out: list[Message]) -> None:
        """Full batches off the front of ``site``'s buffer; what is left keeps its age."""
        buf = self._buffers[site]
        if len(buf) < self.batch:
            return
        topic = _gateway_topic(site)
        full = len(buf) - len(buf) % self.batch
        for k in range(0, full, self.batch):
            out.append(self._message(topic, buf[k:k + self.batch]))
        if full == len(buf):
            del self._buffers[site], self._born[site]
        else:
            # The rest is new readings: the batch's age starts with them.
            self._buffers[site] = buf[full:]
            self._born[site] = self.clock()

    def due(self) -> list[Message]:
        """Partial gateway batches older than ``max_age_s``."""
        now = self.clock()
        return [self._take(site) for site, born in list(self._born.items()) if now - born >= self.max_age_s]

    def flush(self) -> list[Message]:
        return [self._take(site) for site in list(self._buffers)]

    def pending(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def _take(self, site: str) -> Message:
        items = self._buffers.pop(site)
        del self._born[site]
        return self._message(_gateway_topic(site), items)

    def _message(self, topic: str, entries: list[Entry]) -> Message:
        plain = set(map(type, entries)) == _ONLY_DICTS
        if plain:
            stamps = list(map(_event_time, entries))
        else:
            stamps = [_event_time(e if type(e) is dict else e.reading) for e in entries]  # type: ignore[union-attr]
        newest = self.newest_ts
        late: list[int] = []
        top = max(stamps) if newest is None else max(newest, *stamps)
        if min(stamps) < top - self.late_threshold_ms:
            # Some reading may be late: judge each against the newest event time sent before it.
            for k, ts in enumerate(stamps):
                if newest is None or ts > newest:
                    newest = ts
                elif newest - ts > self.late_threshold_ms:
                    late.append(k)
        self.newest_ts = top
        if plain and not late:
            return Message(topic, encode(entries), [], plain=entries)  # type: ignore[arg-type]
        # A bare reading judged late (the clock went back) travels as an Item, so the ledger can
        # keep it apart.
        items = [Item(reading=e) if type(e) is dict else e for e in entries]
        for k in late:
            items[k].late = True  # type: ignore[union-attr]
        return Message(topic, encode([i.reading for i in items]), items)  # type: ignore[misc,union-attr]
