"""The stage collector (``tsdemo storage stages``): the pipeline's stage counters into InfluxDB.

Every ``--stages-interval-s`` it reads each stage's own Prometheus counter from the services that keep
it (published: the generators; bridged and rejected: the bridges; stored: the Spark job), sums it over
their instances and writes one ``stage`` point per stage (tag ``stage``, field ``total``), which the
pipeline dashboard turns into rates. The same collector runs beside the pipeline in every deployment
(the local stack, compose, Kubernetes), so the dashboard has the same data wherever the pipeline runs.

A stage whose services cannot all be read in a round is left out of that round rather than written
short: a sum missing one instance would look like its counter falling back and then jumping forward.
A service restarting does set its counter back to zero; the dashboard's ``non_negative_*`` functions
drop that one step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import Counter
from pydantic import Field

from servicekit.contract import metrics as m
from servicekit.contract.influx import (
    STAGE,
    STAGE_BRIDGED,
    STAGE_FIELD,
    STAGE_PUBLISHED,
    STAGE_REJECTED,
    STAGE_STORED,
    STAGE_TAG,
)
from servicekit.scrape import ScrapeError, scrape_sum
from storage.settings import InfluxSettings

log = logging.getLogger("storage.stages")

#: stage -> (the component whose /metrics keep it, its counter's sample name)
SOURCES: dict[str, tuple[str, str]] = {
    STAGE_PUBLISHED: ("generator", m.GENERATOR_READINGS_ACKED),
    STAGE_BRIDGED: ("ingest", m.INGEST_FORWARDED),
    STAGE_REJECTED: ("ingest", m.INGEST_REJECTED),
    STAGE_STORED: ("processing", m.PROCESSING_READINGS_STORED),
}

SCRAPE_ERRORS = Counter(m.STAGES_SCRAPE_ERRORS, "rounds in which a component's /metrics could not be read",
                        ["component"])
ROUNDS = Counter(m.STAGES_ROUNDS_WRITTEN, "rounds of stage points written to InfluxDB")

_URLS_HELP = ("/metrics URLs, comma-separated (empty: none); a host name with several addresses (a headless "
              "Service, compose replicas) is read at each")


class StagesSettings(InfluxSettings):
    generator_metrics_urls: str = Field("", description=f"the generators' {_URLS_HELP}")
    ingest_metrics_urls: str = Field("", description=f"the bridges' {_URLS_HELP}")
    processing_metrics_urls: str = Field("", description=f"the Spark job's {_URLS_HELP}")
    stages_interval_s: float = Field(10.0, gt=0, le=3600, description="seconds between two rounds of stage points")
    scrape_timeout_s: float = Field(2.0, gt=0, le=60, description="seconds to wait for one /metrics answer")
    health_port: int = Field(-1, description="port for /healthz and /metrics (0: any free port, <0: off)")
    log_level: str = Field("INFO", description="log level")

    def targets(self) -> dict[str, list[str]]:
        """Component -> its /metrics URLs."""
        given = {c: getattr(self, f"{c}_metrics_urls") for c in COMPONENTS}
        return {name: [u.strip() for u in urls.split(",") if u.strip()] for name, urls in given.items()}


#: the components whose counters are stages (``StagesSettings`` has a ``<component>_metrics_urls`` each)
COMPONENTS = tuple(dict.fromkeys(c for c, _ in SOURCES.values()))


def collector_env(urls: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The collector's ``TSDEMO_<COMPONENT>_METRICS_URLS`` for these /metrics URLs by component."""
    return {f"TSDEMO_{c.upper()}_METRICS_URLS": ",".join(urls.get(c, ())) for c in COMPONENTS}


class StageCollector:
    """Reads the stage counters: ``totals()`` is one round, ``points()`` its ``stage`` points."""

    def __init__(self, targets: dict[str, list[str]], timeout_s: float = 2.0) -> None:
        self.targets = targets
        self.timeout_s = timeout_s

    def totals(self) -> dict[str, float]:
        """Stage -> its counter summed over the component's instances, for every stage that could be read."""
        out: dict[str, float] = {}
        for component, urls in self.targets.items():
            stages = {stage: name for stage, (c, name) in SOURCES.items() if c == component}
            if not urls or not stages:
                continue
            try:
                sums = scrape_sum(urls, set(stages.values()), self.timeout_s)
            except ScrapeError as exc:
                SCRAPE_ERRORS.labels(component).inc()
                log.warning("could not read a stage counter", extra={"fields": {"component": component,
                                                                                "error": str(exc)}})
                continue
            out.update({stage: sums[name] for stage, name in stages.items()})
        return out

    @staticmethod
    def points(totals: dict[str, float], now_ms: int) -> list[dict[str, Any]]:
        return [{"measurement": STAGE, "tags": {STAGE_TAG: stage}, "fields": {STAGE_FIELD: float(total)},
                 "time": now_ms} for stage, total in sorted(totals.items())]


def run_collector(settings: StagesSettings, stop: threading.Event) -> int:
    """Writes a round of stage points every interval until ``stop`` is set."""
    from servicekit.service import log_event, serve_health
    from storage.writer import InfluxWriteError, InfluxWriter

    collector = StageCollector(settings.targets(), settings.scrape_timeout_s)
    if not any(collector.targets.values()):
        log.error("no /metrics URL given: set --generator-metrics-urls, --ingest-metrics-urls and "
                  "--processing-metrics-urls (TSDEMO_*_METRICS_URLS)")
        return 2
    state: dict[str, Any] = {"ok": False, "stages": [], "error": "no round yet"}

    def health() -> tuple[bool, dict]:
        return state["ok"], {k: v for k, v in state.items() if k != "ok"}

    server = serve_health(settings.health_port, health)
    if server is not None:
        log_event(log, "health endpoint up", port=server.server_address[1])
    log_event(log, "collecting stage counters", targets=collector.targets, interval_s=settings.stages_interval_s)
    with InfluxWriter(settings) as writer:
        while not stop.is_set():
            totals = collector.totals()
            try:
                writer.write(collector.points(totals, int(time.time() * 1000)))
            except InfluxWriteError as exc:
                state.update(ok=False, error=str(exc))
                log.warning("could not write the stage points", extra={"fields": {"error": str(exc)}})
            else:
                ROUNDS.inc()
                state.update(ok=True, stages=sorted(totals), error=None)
            stop.wait(settings.stages_interval_s)
    if server is not None:
        server.shutdown()
    return 0
