"""Settings of the fleet generator (``tsdemo generate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from servicekit.mqtt import MqttSettings

RATE = dict(ge=0.0, le=1.0)


class GeneratorSettings(MqttSettings):
    # -- the fleet ------------------------------------------------------------------------------------
    devices: int = Field(20, ge=1, le=1_000_000, description="number of simulated devices")
    sites: int = Field(3, ge=1, description="number of sites the devices are spread over")
    seed: int = Field(42, description="seed that makes the fleet, its signals and its faults reproducible")
    device_prefix: str = Field(
        "dev", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="device ids are <prefix>-<number>; a second fleet publishing into the same pipeline needs a "
        "prefix of its own, since the Spark job drops a reading whose (device, boot, seq) it has seen as a duplicate",
    )
    fleet_manifest_path: Path | None = Field(
        None, description="write each device's identity, site, location and metric units here (JSONL)"
    )
    # -- pace and bounds --------------------------------------------------------------------------------
    rate: float = Field(50.0, gt=0, description="target readings per second for the whole fleet")
    batch: int = Field(1, ge=1, le=10_000, description="readings per MQTT message (>1: gateway array form)")
    count: int = Field(0, ge=0, description="stop after this many readings (0: no limit)")
    duration_s: float = Field(0.0, ge=0, description="stop after this many seconds (0: no limit)")
    processes: int = Field(
        1, ge=1, le=64, description="worker processes publishing the fleet, each with its own share of the sites "
        "and its own MQTT connection (client id <client-id>-<n>), so one generator uses more than one core; this "
        "process keeps the one ledger. Not with --replay-path"
    )
    # -- MQTT ------------------------------------------------------------------------------------------
    qos: int = Field(1, ge=0, le=1, description="MQTT QoS for publishing (0: the ledger counts what was "
                     "written to the socket, not what the broker acknowledged)")
    resend_window_s: float = Field(
        3.0, ge=0, description="after every reconnect, send again what the broker acknowledged in the last this "
        "many seconds before the connection was lost (a broker that crashes loses what it had not saved yet; "
        "duplicates are dropped downstream)"
    )
    resend_unrouted: bool = Field(
        True, description="send again, until someone subscribes, a message the broker acknowledged with "
        "'no matching subscribers' (MQTT 5 reason 16): Mosquitto does not restore a shared subscription from its "
        "store, so after a broker restart it drops what arrives before the bridge subscribes again. Off only "
        "for a broker nobody reads"
    )
    max_inflight: int = Field(
        256, ge=1, le=60_000, description="unacknowledged MQTT messages allowed at once (QoS 1): enough to "
        "cover the round trip to the broker; more only holds more in memory and in the broker's backlog"
    )
    client_id: str = Field("tsdemo-generator", description="MQTT client id, stable across restarts (give each "
                           "generator of a stack its own)")
    # -- the ledger and labels -----------------------------------------------------------------------
    ledger_path: Path | None = Field(
        Path(".tsdemo/ledger/generator.json"), description="where the ledger of published readings goes"
    )
    ledger_flush_s: float = Field(2.0, gt=0, description="seconds between ledger file rewrites (stretched so "
                                  "rewriting a large ledger takes at most a twentieth of the time)")
    ledger_detail_s: float = Field(300.0, ge=120, description="per-minute ledger buckets kept this long "
                                   "before they merge into one per series (keep above verify's --settle-s)")
    late_threshold_s: float = Field(30.0, gt=0, description="a reading sent further behind the newest event time "
                                    "already sent goes to the ledger's late section (match processing's "
                                    "--watermark)")
    labels_path: Path | None = Field(
        Path(".tsdemo/ledger/labels.jsonl"), description="JSONL file the anomaly labels are appended to "
        "(only written when --anomaly-rate > 0)"
    )
    # -- faults (rates are probabilities per reading unless said otherwise) ----------------------------
    anomaly_rate: float = Field(0.0, **RATE, description="chance that a reading starts an anomaly episode "
                                "(spike, stuck-at, drift or dropout) on a device not already in one")
    duplicate_rate: float = Field(0.0, **RATE, description="chance that a reading is sent twice (same id)")
    out_of_order_rate: float = Field(0.0, **RATE, description="chance that a reading's event time is behind by "
                                     "--out-of-order-delay-s (within the watermark: still counted)")
    out_of_order_delay_s: float = Field(5.0, gt=0, description="how far behind an out-of-order reading is")
    late_rate: float = Field(0.0, **RATE, description="chance that a reading's event time is behind by "
                             "--late-delay-s (beyond the watermark: dropped as late downstream)")
    late_delay_s: float = Field(120.0, gt=0, description="how far behind a late reading is")
    clock_skew_rate: float = Field(0.0, **RATE, description="share of devices whose clock is off (per device)")
    clock_skew_max_s: float = Field(10.0, gt=0, description="a skewed clock is off by up to this either way")
    offline_rate: float = Field(0.0, **RATE, description="chance that a device goes offline at a reading; it "
                                "buffers its readings and sends the backlog when back")
    offline_duration_s: float = Field(60.0, gt=0, description="mean offline time (each burst: 0.5 to 1.5 times)")
    reboot_rate: float = Field(0.0, **RATE, description="chance that a device reboots before a reading "
                               "(boot + 1, seq from 0)")
    malformed_rate: float = Field(0.0, **RATE, description="chance that a malformed payload is sent besides a "
                                  "reading (counted as malformed_sent in the ledger, not as a reading)")
    # -- replay --------------------------------------------------------------------------------------
    replay_path: Path | None = Field(None, description="replay this CSV or JSONL file of readings instead of "
                                     "simulating the fleet (event times rebased to now)")
    replay_timing: Literal["original", "rate"] = Field(
        "original", description="replay at the file's own timing, event times shifted to start now (original), "
        "or at --rate, each reading stamped with the time it is sent (rate)"
    )
    # -- service -------------------------------------------------------------------------------------
    drain_timeout_s: float = Field(60.0, ge=0, description="on stop, wait this long for outstanding acks")
    health_port: int = Field(-1, description="port for /healthz and /metrics (0: any free port, <0: off)")
    log_level: str = Field("INFO", description="log level")

    @model_validator(mode="after")
    def _consistent(self) -> GeneratorSettings:
        if self.replay_path is None and self.batch > self.devices:
            raise ValueError(f"batch ({self.batch}) cannot exceed the number of devices ({self.devices})")
        if self.late_rate + self.out_of_order_rate > 1:
            raise ValueError("late_rate + out_of_order_rate cannot exceed 1")
        if self.processes > 1 and self.replay_path is not None:
            raise ValueError("--processes above 1 splits the simulated fleet by site; a replay is one stream")
        if self.processes > self.sites:
            raise ValueError(f"processes ({self.processes}) cannot exceed the number of sites ({self.sites}): "
                             "each process publishes whole sites")
        if self.replay_path is not None and not self.replay_path.exists():
            raise ValueError(f"replay file {self.replay_path} does not exist")
        return self
