"""The one registry of the pipeline's components: the servers by name, and each of our services with its
``tsdemo`` command, the pyproject extra its image installs, its health endpoint and the ``TSDEMO_*``
environment it gets from the endpoints of the servers it talks to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

#: The servers of a deployment, in start order (grafana only where a Grafana server is installed).
SERVERS = ("mqtt", "kafka", "influxdb", "grafana")


class _Endpoint(Protocol):
    endpoint: str


@dataclass(frozen=True)
class Endpoints:
    """Where the servers answer, and the names (topics, database) a deployment uses on them; None keeps a
    service's default."""

    mqtt_host: str
    mqtt_port: int
    kafka_bootstrap: str
    influx_url: str | None = None
    kafka_topic: str | None = None
    kafka_dlq_topic: str | None = None
    influx_database: str | None = None

    @classmethod
    def of(cls, mosquitto: _Endpoint, kafka: _Endpoint, influxdb: _Endpoint, **names: str | None) -> Endpoints:
        """From running servers (``deploy.servers``): ``mqtt://host:port``, ``host:port``, ``http://...``."""
        host, port = mosquitto.endpoint.removeprefix("mqtt://").rsplit(":", 1)
        return cls(host, int(port), kafka.endpoint, influxdb.endpoint, **names)

    def env(self, *uses: str) -> dict[str, str]:
        """The ``TSDEMO_*`` variables of the servers named in ``uses`` (``mqtt``, ``kafka``, ``influx``;
        all three when none is named)."""
        uses = uses or ("mqtt", "kafka", "influx")
        values: dict[str, object] = {}
        if "mqtt" in uses:
            values |= {"TSDEMO_MQTT_HOST": self.mqtt_host, "TSDEMO_MQTT_PORT": self.mqtt_port}
        if "kafka" in uses:
            values |= {"TSDEMO_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "TSDEMO_KAFKA_TOPIC": self.kafka_topic,
                       "TSDEMO_KAFKA_DLQ_TOPIC": self.kafka_dlq_topic}
        if "influx" in uses:
            values |= {"TSDEMO_INFLUX_URL": self.influx_url, "TSDEMO_INFLUX_DATABASE": self.influx_database}
        return {k: str(v) for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Component:
    name: str
    #: ``tsdemo`` arguments that run it, as its container's command does
    command: tuple[str, ...]
    #: the pyproject extra that provides it (what its image installs)
    extra: str
    #: the servers it talks to, whose endpoints make its environment
    uses: tuple[str, ...]
    #: the path its health server answers on while it runs; None for a one-shot command
    health: str | None = "/healthz"

    def env(self, endpoints: Endpoints) -> dict[str, str]:
        return endpoints.env(*self.uses)


COMPONENTS: dict[str, Component] = {c.name: c for c in (
    Component("storage-init", ("storage", "init"), "storage", ("influx",), health=None),
    Component("processing", ("process",), "processing", ("kafka", "influx")),
    Component("ingest", ("ingest",), "ingest", ("mqtt", "kafka")),
    Component("generator", ("generate",), "generator", ("mqtt",)),
    Component("verify", ("verify",), "storage", ("influx",), health=None),
    # The stage collector: its /metrics URLs come from the running services (Pipeline.stage_collector_env).
    Component("stages", ("storage", "stages"), "storage", ("influx",)),
)}

#: The long-running services of the pipeline in start order: each downstream of the next is up first.
PIPELINE = ("processing", "ingest", "generator")
#: Started after them by the local stack: it reads their /metrics.
STAGE_COLLECTOR = "stages"


def component(name: str) -> Component:
    """The registry entry; a bridge or generator named ``ingest-2`` or ``generator-faults`` is its kind's."""
    if name in COMPONENTS:
        return COMPONENTS[name]
    kind = name.split("-", 1)[0]
    if kind in COMPONENTS:
        return COMPONENTS[kind]
    raise KeyError(f"no component {name!r}; known: {', '.join(COMPONENTS)}")
