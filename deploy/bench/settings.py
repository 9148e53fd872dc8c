"""Settings of ``tsdemo bench``: what every sub-bench shares, then each one's sizes and knobs.

Defaults are sized so ``tsdemo bench all`` takes about ten minutes on a 2-core machine; the
``--readings`` and ``--duration-s`` flags go bigger.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from generators.settings import GeneratorSettings
from processing.settings import duration_ms
from servicekit.settings import ServiceSettings

#: Mosquitto's max_queued_messages in deploy.servers: what one session may hold while away.
BROKER_QUEUE_MESSAGES = 100_000


class BenchSettings(ServiceSettings):
    out_dir: Path | None = Field(None, description="where results.json, results.png, profiles/ and logs/ go "
                                 "(default: .tsdemo/bench/<UTC timestamp>)")
    profile: Literal["missed", "always", "never"] = Field(
        "missed", description="profile the Python hops with py-spy: when a target is missed, always, or never"
    )
    keep_state: bool = Field(False, description="keep the servers' temporary state directory (data and logs)")
    devices: int = Field(20, ge=1, description="devices in the simulated fleet (the payloads' shape)")
    sites: int = Field(2, ge=1, description="sites the devices are spread over (one gateway topic per site)")
    target_ratio: float = Field(0.5, gt=0, description="a figure meets its target at this share of its baseline")
    repeats: int = Field(3, ge=1, description="interleaved trials of subject and baseline behind each ratio; "
                         "the ratio reported is their median, with the lowest and highest beside it")
    ready_timeout_s: float = Field(300.0, gt=0, description="how long a server or service may take to become "
                                   "ready (Spark takes about a minute on a busy 2-core machine)")

    def output_dir(self) -> Path:
        return self.out_dir or Path(".tsdemo/bench") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class GenerateBenchSettings(BenchSettings):
    readings: int = Field(100_000, ge=100, description="readings each generator run and mosquitto_pub run publish")
    batches: list[int] = Field([1, 10], description="readings per MQTT message to measure (1: one per device "
                               "topic; more: gateway arrays)")
    qos_levels: list[int] = Field([0, 1], description="MQTT QoS levels to measure")
    max_inflight: int = Field(GeneratorSettings.model_fields["max_inflight"].default, ge=1,
                              description="unacknowledged messages allowed, for the generator "
                              "(--max-inflight) and mosquitto_pub (-M) alike (default: the generator's)")
    generator_processes: int = Field(
        2, ge=1, description="worker processes of the generator (--processes, at most --sites) at batch above 1, "
        "where one process is bound by its own CPU (the baseline runs one mosquitto_pub per topic file); batch 1 "
        "runs one, since there the broker is the limit (QoS 1 measured 0.72 of the baseline with two, 1.10 with one)")

    @model_validator(mode="after")
    def _processes(self) -> GenerateBenchSettings:
        if self.generator_processes > self.sites:
            raise ValueError(f"generator processes ({self.generator_processes}) cannot exceed the sites "
                             f"({self.sites}): each process publishes whole sites")
        return self

    @field_validator("qos_levels")
    @classmethod
    def _qos(cls, value: list[int]) -> list[int]:
        if not value or any(q not in (0, 1) for q in value):
            raise ValueError("QoS levels are 0 and/or 1")
        return value


class IngestBenchSettings(BenchSettings):
    # The most the broker's queue holds: at 300,000 a trial lasted 0.3-1 s on a fast machine, and its
    # baseline moved 474k-1,047k readings/s within one case.
    readings: int = Field(1_000_000, ge=100, description="readings preloaded into the broker for each run "
                          "(at most 100,000 messages: the broker's queue limit per session)")
    batch: int = Field(10, ge=1, description="readings per MQTT message")
    bridge_counts: list[int] = Field([1, 2, 4], description="numbers of bridge processes to measure (one "
                                     "shared subscription group each)")
    bridge_max_inflight: int = Field(1000, ge=1, description="messages each bridge takes before acking "
                                     "(--max-inflight); mosquitto_sub gets the same receive maximum")
    kafka_clients: list[Literal["kafka-python", "confluent"]] = Field(
        ["kafka-python", "confluent"], description="the bridge's Kafka clients to measure, each at every bridge "
        "count (confluent needs the ingest-librdkafka extra)")
    timeout_s: float = Field(600.0, gt=0, description="give up on a drain after this long")

    @model_validator(mode="after")
    def _fits_the_queue(self) -> IngestBenchSettings:
        if self.readings > BROKER_QUEUE_MESSAGES * self.batch:
            raise ValueError(f"{self.readings} readings in batches of {self.batch} are more messages than the "
                             f"broker queues for one session ({BROKER_QUEUE_MESSAGES:,}); raise --batch")
        return self


class SparkBenchSettings(BenchSettings):
    trigger: str = Field("2 seconds", description="Spark micro-batch trigger (processing's --trigger)")

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, value: str) -> str:
        try:
            duration_ms(value)
        except (KeyError, ValueError):
            raise ValueError(f"expected a duration like '2 seconds', got {value!r}") from None
        return value


class ProcessBenchSettings(SparkBenchSettings):
    readings: int = Field(100_000, ge=1000, description="readings preloaded into Kafka for both Spark runs")
    batch: int = Field(10, ge=1, description="readings per Kafka record (the gateway batch)")
    max_offsets_per_trigger: int = Field(1000, ge=1, description="Kafka records per micro-batch at most "
                                         "(offered rate = this x batch / trigger)")
    catchup_offsets_per_trigger: int = Field(
        5000, ge=0, description="Kafka records per micro-batch of the second case, a backlog caught up in big "
        "batches (0: only the first case); its topic holds enough readings for 5 steady batches")
    warmup_batches: int = Field(2, ge=0, description="first micro-batches left out of the figures (JIT, state "
                                "store and connection set-up)")
    spark_master: str = Field("local[*]", description="Spark master of both runs")
    timeout_s: float = Field(900.0, gt=0, description="give up on a Spark run after this long")


class E2EBenchSettings(SparkBenchSettings):
    rates: list[float] = Field([], description="offered readings/s of the ramp's steps (default: fractions of "
                               "the slowest stage's rate in `bench all`, else 2000, 4000, 8000, 16000)")
    ramp_fractions: list[float] = Field([0.1, 0.25, 0.5, 0.75, 1.0], description="steps as fractions of the slowest "
                                        "stage's own rate, when `bench all` measured it")
    duration_s: float = Field(15.0, ge=5, description="seconds the generator runs at each step")
    batch: int = Field(10, ge=1, description="readings per MQTT message (gateway arrays)")
    bridges: int = Field(2, ge=1, description="bridge processes (one shared subscription group)")
    freshness_target_s: float = Field(5.0, gt=0, description="p99 freshness (now minus the newest stored event "
                                      "time) a step must stay under")
    verify_wait_s: float = Field(60.0, ge=0, description="after each step, how long verify may wait for stored "
                                 "counts to match the ledger")
    stretch_rate: float = Field(100_000.0, gt=0, description="the stretch goal in readings/s")


class AllBenchSettings(BenchSettings):
    scale: float = Field(1.0, gt=0, description="multiply every sub-bench's default readings and step duration")
