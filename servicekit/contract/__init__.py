"""The contract: every name that crosses a process boundary, in one package.

- here: the message contract between devices, the bridge and processing (topics, the reading);
- ``influx``: InfluxDB's database, measurements, tags, fields, retention policies and rollups;
- ``metrics``: the Prometheus metric names the services export and the stage counters read;
- ``labels``: the ground-truth anomaly label file the generator writes and the checks score against;
- ``ledger``: the generator's ledger file, which ``tsdemo verify`` compares with InfluxDB.

Devices publish UTF-8 JSON to ``sensors/<site>/<device_id>`` at QoS 1: one reading object or a
JSON array of readings (a gateway's batch). A reading is identified by (device_id, boot, seq).
See docs in README.md ("The contract"); these names are fixed because devices, dashboards and
scripts depend on them.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

TOPIC_PREFIX = "sensors"
TOPIC_FILTER = f"{TOPIC_PREFIX}/#"
KAFKA_TOPIC = "sensor-readings"
KAFKA_DLQ_TOPIC = "sensor-readings-dlq"


def topic_for(site: str, device_id: str) -> str:
    """The MQTT topic a device (or a gateway named like one) publishes to."""
    return f"{TOPIC_PREFIX}/{site}/{device_id}"


class Reading(BaseModel):
    """One sensor reading as it travels on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str = Field(min_length=1)
    site: str = Field(min_length=1)
    type: str = Field(min_length=1)
    ts: int = Field(description="event time, epoch milliseconds")
    seq: int = Field(ge=0, description="counts a device's readings from 0 within one boot")
    metrics: dict[str, float]
    boot: int = Field(default=0, ge=0)
    lat: float | None = None
    lon: float | None = None
    battery: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def encode(readings: list[dict[str, Any]]) -> bytes:
    """One reading as an object, several as the array form; compact to keep messages small.

    orjson is 17x faster than ``json.dumps`` here, but writes NaN and infinity as ``null`` where the
    contract has no null: a payload holding ``null`` is encoded again by ``json``, which refuses
    non-finite numbers (ValueError) just as before.
    """
    body: Any = readings[0] if len(readings) == 1 else readings
    out = orjson.dumps(body)
    if b"null" in out:
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return out
