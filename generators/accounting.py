"""From broker acknowledgements to the ledger and the labels: the accounting rules in one place.

- A reading counts once, when the broker acknowledged the first of its copies; later copies only
  add to ``duplicates_sent`` (the pipeline deduplicates on (device_id, boot, seq)).
- A reading judged late when its message was built goes to the ledger's late section.
- Malformed payloads are not readings: they add to ``malformed_sent``.
- A dropped reading (dropout anomaly) is never sent, so it is never counted; its labels are
  written when it is dropped, an acknowledged reading's labels when it is counted.
"""

from __future__ import annotations

import threading

from generators.labels import LabelWriter
from generators.ledger import Ledger, boot_keys, count_keys, plain_boot_keys, plain_count_keys
from generators.outgoing import Item, Message


class Accountant:
    def __init__(self, ledger: Ledger, labels: LabelWriter) -> None:
        self.ledger = ledger
        self.labels = labels
        # Acks are settled on the network thread and, for a PUBACK that overtook the hand-over, on the
        # generator's: "first acknowledged copy counts" must be decided one batch at a time.
        self._lock = threading.Lock()

    def sent(self, messages: list[Message]) -> None:
        """Before the messages go out: the ledger learns the boots in use."""
        plain: list[dict] = []
        readings: list[dict] = []
        for m in messages:
            if m.plain is not None:
                plain += m.plain
            else:
                readings += [i.reading for i in m.items if i.reading is not None]
        self.ledger.note_boots(plain_boot_keys(plain) | boot_keys(readings))

    def acked(self, messages: list[Message]) -> int:
        """The broker acknowledged ``messages``; returns the readings newly counted."""
        with self._lock:
            return self._acked(messages)

    def _acked(self, messages: list[Message]) -> int:
        plain, on_time, late, labels = [], [], [], []
        malformed = duplicates = 0
        for message in messages:
            if message.plain is not None:
                plain += message.plain
                continue
            for item in message.items:
                if item.reading is None:
                    malformed += item.payload is not None
                    continue
                if item.group is not None:
                    if item.group.counted:
                        duplicates += 1
                        continue
                    item.group.counted = True
                (late if item.late else on_time).append(item.reading)
                if item.labels:
                    labels.extend(item.labels)
        counts = plain_count_keys(plain)
        counts.update(count_keys(on_time))
        counts.update(count_keys(late, late=True))
        self.ledger.add_counts(counts)
        self.ledger.count_extra(malformed=malformed, duplicates=duplicates, messages=len(messages))
        if labels:
            self.labels.write(labels)
        return len(plain) + len(on_time) + len(late)

    def dropped(self, items: list[Item]) -> None:
        self.labels.write([label for i in items if i.dropped for label in i.labels or ()])
