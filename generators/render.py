"""Pre-rendered payloads: the exact messages a run would publish, without a broker, for tools such as
``mosquitto_pub`` to publish the same ones (a benchmark's baseline).

The stream runs on a synthetic clock, reading i at ``start_ms + i * 1000 / rate``, so batching
(including the gateway's partial batches after ``BATCH_MAX_AGE_S``) and every fault come out as in
a live run at exactly the target rate; the same settings and ``start_ms`` give the same bytes.
``write_payloads`` also writes the ledger (and labels) that publishing all of them yields, so
``tsdemo verify`` can check a pipeline fed by another publisher.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from generators.accounting import Accountant
from generators.labels import LabelWriter
from generators.ledger import Ledger
from generators.outgoing import Batcher, Message
from generators.run import make_labels, make_ledger, make_source
from generators.settings import GeneratorSettings


def render_messages(
    settings: GeneratorSettings, count: int, start_ms: int, ledger: Ledger | None = None,
    labels: LabelWriter | None = None,
) -> Iterator[Message]:
    """The messages ``count`` readings make, in send order; each is accounted as acknowledged
    into ``ledger`` and ``labels`` when given. Boots continue from ``ledger`` as in a live run."""
    ledger = ledger or make_ledger(settings, None)
    accountant = Accountant(ledger, labels or LabelWriter(None))
    source = make_source(settings, ledger, start_ms)
    clock = [0.0]
    batcher = Batcher(settings.batch, int(settings.late_threshold_s * 1000), clock=lambda: clock[0])

    def account(messages: list[Message]) -> Iterator[Message]:
        accountant.sent(messages)
        accountant.acked(messages)
        yield from messages

    for i in range(count):
        clock[0] = i / settings.rate
        yield from account(batcher.due())
        items = source.next(start_ms + int(i * 1000 / settings.rate))
        if items is None:
            break
        if any(item.dropped for item in items):
            accountant.dropped(items)
        yield from account(batcher.add(items))
    yield from account(batcher.add(source.drain()))
    yield from account(batcher.flush())


@dataclass(frozen=True)
class Rendered:
    """Per topic, a file of payloads, one per line: ``mosquitto_pub -t TOPIC -l < FILE`` sends them."""

    files: dict[str, Path]
    messages: int
    readings: int
    ledger_path: Path
    labels_path: Path | None


def topic_file_name(topic: str) -> str:
    return topic.replace("/", "__") + ".lines"


def write_payloads(settings: GeneratorSettings, count: int, out_dir: Path, start_ms: int) -> Rendered:
    """Renders ``count`` readings into ``out_dir``: one payload file per topic, ``topics.json`` (topic ->
    file), ``ledger.json`` and, with anomalies, ``labels.jsonl``.

    Payloads are compact JSON without newlines (malformed ones too), so ``mosquitto_pub -l`` sends one
    message per line; each topic's messages keep their order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger = make_ledger(settings, out_dir / "ledger.json")
    labels_path = out_dir / "labels.jsonl" if settings.anomaly_rate > 0 else None
    labels = make_labels(settings, labels_path)
    files: dict[str, Path] = {}
    handles = {}
    messages = 0
    try:
        for m in render_messages(settings, count, start_ms, ledger, labels):
            handle = handles.get(m.topic)
            if handle is None:
                files[m.topic] = out_dir / topic_file_name(m.topic)
                handle = handles[m.topic] = open(files[m.topic], "wb")  # noqa: SIM115 (closed below)
            handle.write(m.payload + b"\n")
            messages += 1
    finally:
        for handle in handles.values():
            handle.close()
        labels.close()
    ledger.complete = True
    ledger.flush()
    (out_dir / "topics.json").write_text(json.dumps({t: p.name for t, p in files.items()}, indent=1))
    return Rendered(files, messages, ledger.published, out_dir / "ledger.json", labels_path)
