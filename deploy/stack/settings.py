"""Settings of the local stack (``tsdemo up``, ``down``, ``status``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from servicekit.settings import PrintsResults, ServiceSettings


class StackPlace(ServiceSettings):
    """Where a stack keeps its state: all ``tsdemo down`` needs."""

    state_dir: Path = Field(Path(".tsdemo"), description="where logs, data, checkpoints and the ledger live")


class StackEndpoints(StackPlace):
    """Where its servers answer: what ``tsdemo status`` shows for a part that is not running."""

    host: str = Field("127.0.0.1", description="address the local servers listen on")
    mqtt_port: int = Field(1883, ge=1, le=65535, description="Mosquitto port")
    kafka_port: int = Field(9092, ge=1, le=65535, description="Kafka broker port")
    influx_port: int = Field(8086, ge=1, le=65535, description="InfluxDB HTTP port")


class StatusSettings(StackEndpoints, PrintsResults):
    pass


class StackSettings(StackEndpoints):
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="Kafka KRaft controller port")
    grafana: bool = Field(True, description="start Grafana with the dashboards when a Grafana server is on PATH")
    grafana_port: int = Field(3000, ge=1, le=65535, description="Grafana port")
    devices: int = Field(20, ge=1, description="devices in the demo fleet")
    sites: int = Field(3, ge=1, description="sites in the demo fleet")
    rate: float = Field(50.0, gt=0, description="readings per second the demo fleet publishes")
    generator_count: int = Field(0, ge=0, description="stop the generator after this many readings (0: never)")
    detach: bool = Field(False, description="leave the stack running in the background and return")
    ready_timeout_s: float = Field(180.0, gt=0, description="how long each part may take to become ready")
    progress_interval_s: float = Field(2.0, gt=0, description="seconds between progress lines")
