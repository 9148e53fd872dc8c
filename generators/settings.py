"""Settings of the fleet generator (``tsdemo generate``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from servicekit.mqtt import MqttSettings


class GeneratorSettings(MqttSettings):
    devices: int = Field(20, ge=1, le=1_000_000, description="number of simulated devices")
    sites: int = Field(3, ge=1, description="number of sites the devices are spread over")
    seed: int = Field(42, description="seed that makes the fleet and its signals reproducible")
    rate: float = Field(50.0, gt=0, description="target readings per second for the whole fleet")
    batch: int = Field(1, ge=1, le=10_000, description="readings per MQTT message (>1: gateway array form)")
    count: int = Field(0, ge=0, description="stop after this many readings (0: no limit)")
    duration_s: float = Field(0.0, ge=0, description="stop after this many seconds (0: no limit)")
    qos: int = Field(1, ge=0, le=1, description="MQTT QoS for publishing")
    max_inflight: int = Field(
        2000, ge=1, le=60_000, description="unacknowledged MQTT messages allowed at once (QoS 1)"
    )
    client_id: str = Field("tsdemo-generator", description="MQTT client id, stable across restarts")
    ledger_path: Path | None = Field(
        Path(".tsdemo/ledger/generator.json"), description="where the ledger of published readings goes"
    )
    ledger_flush_s: float = Field(2.0, gt=0, description="seconds between ledger file rewrites")
    drain_timeout_s: float = Field(60.0, ge=0, description="on stop, wait this long for outstanding acks")
    health_port: int = Field(-1, description="port for /healthz and /metrics (0: any free port, <0: off)")
    log_level: str = Field("INFO", description="log level")

    @model_validator(mode="after")
    def _batch_fits(self) -> GeneratorSettings:
        if self.batch > self.devices:
            raise ValueError(f"batch ({self.batch}) cannot exceed the number of devices ({self.devices})")
        return self
