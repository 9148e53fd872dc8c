"""The messages a bench moves, rendered once by the generator's own code (``generators.render``) so the
Python hop and its C-tool baseline carry the same payloads.

Rendering costs about as much as generating, so at most ``base_max`` readings are rendered; a larger
set repeats them, each copy under the next ``boot`` and shifted later in event time by the span of
the rendered part. Every reading id ``(device_id, boot, seq)`` stays unique and event time keeps moving
forward, so processing neither drops copies as duplicates nor sees them as late.

Files: one per MQTT topic, one payload per line (``mosquitto_pub -l``), and ``kafka.lines`` with
``key<TAB>payload`` lines in the order the bridge would write them (``kcat -P -K '\\t'``), keyed
like the bridge keys them (the topic's last segment).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from generators.render import topic_file_name, write_payloads
from generators.settings import GeneratorSettings
from ingest.records import kafka_key

_SHIFTED = re.compile(rb'"(ts|boot)":(\d+)')


@dataclass(frozen=True)
class PayloadSet:
    directory: Path
    topic_files: dict[str, Path]
    kafka_file: Path
    messages: int
    readings: int

    @property
    def readings_per_message(self) -> float:
        return self.readings / self.messages if self.messages else 0.0

    def as_dict(self) -> dict:
        return {"directory": str(self.directory), "messages": self.messages, "readings": self.readings,
                "topics": len(self.topic_files)}


def shift_copy(line: bytes, copy: int, span_ms: int) -> bytes:
    """``line`` as copy number ``copy``: every reading's ``boot`` + copy and ``ts`` + copy * span."""
    def shifted(match: re.Match[bytes]) -> bytes:
        name, value = match.group(1), int(match.group(2))
        value += copy if name == b"boot" else copy * span_ms
        return b'"%s":%d' % (name, value)

    return _SHIFTED.sub(shifted, line) if copy else line


def render_payloads(
    devices: int, sites: int, batch: int, readings: int, out_dir: Path, *, rate: float,
    base_max: int = 100_000, seed: int = 42,
) -> PayloadSet:
    """``readings`` readings in ``batch``-reading messages, event times paced at ``rate`` readings/s and
    ending a minute before now (so none is "from the future" for processing); cached in ``out_dir``."""
    manifest = out_dir / "payloads.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        return PayloadSet(out_dir, {t: out_dir / n for t, n in data["topics"].items()}, out_dir / "kafka.lines",
                          data["messages"], data["readings"])
    copies = -(-readings // base_max)
    base = -(-readings // copies)
    span_ms = int(base * 1000 / rate)
    start_ms = int(time.time() * 1000) - copies * span_ms - 60_000
    settings = GeneratorSettings(devices=devices, sites=sites, batch=batch, rate=rate, seed=seed, ledger_path=None,
                                 labels_path=None)
    rendered = write_payloads(settings, base, out_dir / "base", start_ms)
    base_lines = {topic: path.read_bytes().splitlines() for topic, path in rendered.files.items()}
    per_copy = rendered.readings
    topic_files = {topic: out_dir / topic_file_name(topic) for topic in base_lines}
    messages = 0
    handles = {topic: open(path, "wb") for topic, path in topic_files.items()}  # noqa: SIM115 (closed below)
    try:
        with open(out_dir / "kafka.lines", "wb") as kafka:
            for copy in range(copies):
                # Copy by copy, so within a Kafka partition event time is never further behind than one
                # copy's span (keep it below processing's watermark).
                for topic, lines in base_lines.items():
                    key = kafka_key(topic) + b"\t"
                    out = [shift_copy(line, copy, span_ms) + b"\n" for line in lines]
                    handles[topic].writelines(out)
                    kafka.writelines(key + line for line in out)
                    messages += len(out)
    finally:
        for handle in handles.values():
            handle.close()
    manifest.write_text(json.dumps({"topics": {t: p.name for t, p in topic_files.items()}, "messages": messages,
                                    "readings": per_copy * copies, "copies": copies, "span_ms": span_ms}))
    return PayloadSet(out_dir, topic_files, out_dir / "kafka.lines", messages, per_copy * copies)
