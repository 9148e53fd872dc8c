"""``tsdemo bench e2e``: the highest rate the whole pipeline sustains, generator -> Mosquitto -> bridges ->
Kafka -> Spark job -> InfluxDB, everything on this machine, each service as its container runs it.

A ramp of steps: at each, the generator publishes at the step's rate for ``--duration-s`` at QoS 1
(all steps share one ledger, so every restart is a fleet reboot and ``tsdemo verify`` checks the
whole run so far). A step passes when

- 95% of the windows query's batches finish within the trigger, from the step's start until verify
  found its data stored (a job that lags is still working on the step after the generator stopped);
- freshness, now minus the newest event time stored (``device_status.last_seen_ms``, written with
  the windows), stays under ``--freshness-target-s`` at p99, sampled twice a second while the
  generator runs, once the step's data shows (the newest window's start time would add up to a whole
  window length on top, so the newest reading in it is what is measured);
- ``tsdemo verify`` finds nothing lost or double-counted (waiting up to ``--verify-wait-s``);
- the generator reached 90% of the step's rate (else the source, not the pipeline, was the limit).

The ramp stops at the first failing step; the sustained rate is the best achieved rate of a passing
step. Its steps are, unless ``--rates`` names them, fractions of the slowest stage's own rate measured
earlier in the same run by ``bench all``. When the target is missed, one more step at the failing
rate runs under py-spy (generator, bridges, the job's Python side) and Java Flight Recorder (the
job's JVM), not judged. A first step at the lowest rate, not judged either, warms the job up (its
first batches start Python workers and state stores).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.bench import jvm_profile, profiles
from deploy.bench.environment import BenchEnvironment
from deploy.bench.report import BenchResult, Comparison, Run
from deploy.bench.resources import ResourceMonitor, Usage
from deploy.bench.settings import E2EBenchSettings
from deploy.bench.spark_batches import phase_means, pipeline_batches
from deploy.bench.stats import percentile
from deploy.services.components import Endpoints
from deploy.services.pipeline import Pipeline as ServicePipeline
from deploy.services.process import Process, run_tool, tsdemo
from processing.settings import duration_ms
from servicekit.contract.influx import DEVICE_STATUS, PIPELINE_QUERY_WINDOWS
from servicekit.contract.ledger import load_ledger
from storage.queries import InfluxQuery, quote_ident
from storage.settings import InfluxSettings

DEFAULT_RATES = (2000.0, 4000.0, 8000.0, 16000.0)
FRESHNESS_EVERY_S = 0.5
#: The generator reaching less than this share of a step's rate makes the source the limit.
SOURCE_SHARE = 0.9
DATABASE = "bench_e2e"


def stage_rates(results: list[BenchResult], s: E2EBenchSettings) -> dict[str, float]:
    """Each stage's own readings/s measured earlier in this run, in the ramp's configuration:
    the generator at QoS 1 and this batch size, the bridge with this many processes, the Spark job's
    processing rate."""
    rates: dict[str, float] = {}
    for result in results:
        for c in result.comparisons:
            d = c.subject.details
            if result.name == "generate" and d.get("qos") == 1 and d.get("batch") == s.batch:
                rates["generate"] = c.subject.rate
            elif result.name == "ingest" and d.get("bridges") == s.bridges:
                rates[f"ingest ({s.bridges} bridges)"] = c.subject.rate
            elif result.name == "process":
                rates["process"] = c.subject.rate
    return rates


def ramp(s: E2EBenchSettings, stages: dict[str, float]) -> list[float]:
    """The offered rates of the steps: ``--rates``, else fractions of the slowest stage, else defaults."""
    if s.rates:
        return sorted(s.rates)
    if stages:
        slowest = min(stages.values())
        return [max(100.0, round(slowest * f, -2)) for f in sorted(s.ramp_fractions)]
    return list(DEFAULT_RATES)


def freshness_values(samples: list[tuple[float, float | None]], since_ms: float) -> list[float]:
    """Seconds between each sample's time and the newest stored event then (both epoch ms), counting
    only samples that already show data of the step (newest event at or after ``since_ms``)."""
    return [(at - newest) / 1000 for at, newest in samples if newest is not None and newest >= since_ms]


def judge(step: dict[str, Any], trigger_ms: float, freshness_target_s: float) -> list[str]:
    """Why a step failed (empty: it passed)."""
    failed = []
    if step["batch_p95_ms"] is None:
        failed.append("no micro-batch finished")
    elif step["batch_p95_ms"] > trigger_ms:
        failed.append(f"p95 batch {step['batch_p95_ms']:.0f} ms > trigger {trigger_ms:.0f} ms")
    if step["freshness_p99_s"] is None:
        failed.append("none of the step's data was stored while it ran")
    elif step["freshness_p99_s"] > freshness_target_s:
        failed.append(f"p99 freshness {step['freshness_p99_s']:.1f} s > {freshness_target_s:g} s")
    if step["lost"] or step["double_counted"]:
        failed.append(f"verify: {step['lost']} lost, {step['double_counted']} double-counted")
    if step["achieved_rate"] < SOURCE_SHARE * step["offered_rate"]:
        failed.append(f"generator reached only {step['achieved_rate']:,.0f} readings/s")
    return failed


class FreshnessProbe:
    """Samples the newest event time InfluxDB holds, on a thread, while a step runs."""

    def __init__(self, influx: InfluxQuery) -> None:
        self.influx = influx
        self.samples: list[tuple[float, float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-freshness", daemon=True)

    def newest_event_ms(self) -> float | None:
        rows = self.influx.query(f'SELECT max("last_seen_ms") FROM {quote_ident(DEVICE_STATUS)} '
                                 "WHERE time > now() - 10m")
        return float(rows[0]["max"]) if rows and rows[0].get("max") is not None else None

    def _run(self) -> None:
        while not self._stop.wait(FRESHNESS_EVERY_S):
            try:
                newest = self.newest_event_ms()
            except Exception:  # noqa: BLE001 - a missed sample is only a missed sample
                continue
            self.samples.append((time.time() * 1000, newest))

    def __enter__(self) -> FreshnessProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Pipeline:
    """The long-running part of the e2e bench, the Spark job and the bridges, and the generator of each step:
    the shared pipeline runner under the names the bench reports them by."""

    env: BenchEnvironment
    s: E2EBenchSettings
    influx: InfluxQuery
    services: ServicePipeline
    ledger: Path

    @property
    def service_env(self) -> dict[str, str]:
        return self.services.env

    @property
    def job(self) -> Process | None:
        return self.services.services.get("tsdemo process")

    @property
    def bridges(self) -> list[Process]:
        return [self.services.services[f"bridge-{i}"] for i in range(self.s.bridges)
                if f"bridge-{i}" in self.services.services]

    def start(self) -> None:
        env, s = self.env, self.s
        # All started at once, then waited for: their start-ups overlap.
        self.services.start("tsdemo process", "process", {}, log_path=env.logs / "e2e-process.log", wait=False)
        for i in range(s.bridges):
            self.services.start(f"bridge-{i}", "ingest", {"TSDEMO_CLIENT_ID": f"bench-e2e-bridge-{i}"},
                                log_path=env.logs / f"e2e-bridge-{i}.log", wait=False)
        for child in [*self.bridges, self.job]:
            assert child is not None
            child.wait_healthy(env.ready_timeout_s)

    def stop(self) -> None:
        self.services.stop()

    def generator(self, rate: float, tag: str) -> Process:
        args = ("--rate", str(rate), "--duration-s", str(self.s.duration_s), "--batch", str(self.s.batch),
                "--devices", str(self.s.devices), "--sites", str(self.s.sites), "--qos", "1",
                "--ledger-path", str(self.ledger), "--client-id", "bench-e2e-generator")
        return self.services.start("tsdemo generate", "generate", args=args, wait=False,
                                   log_path=self.env.logs / f"e2e-generate-{tag}.log")

    def verify(self, wait_s: float) -> dict[str, Any]:
        out = run_tool("tsdemo verify", tsdemo("verify", "--ledger-path", str(self.ledger), "--wait-s", str(wait_s),
                                               "--json"),
                       self.env.logs / "e2e-verify.log", self.service_env, timeout_s=wait_s + 120, ok=(0, 1))
        return json.loads(out)

    def published(self) -> int:
        return int(load_ledger(self.ledger).header["published"]) if self.ledger.exists() else 0


def run_step(p: Pipeline, rate: float, index: int) -> tuple[dict[str, Any], dict[str, Usage]]:
    env, s = p.env, p.s
    before = p.published()
    start_s = time.time()
    with ResourceMonitor() as monitor, FreshnessProbe(p.influx) as probe:
        for name, pid in env.server_pids().items():
            monitor.watch(name, pid)
        for child in [p.job, *p.bridges]:
            if child is not None:
                monitor.watch(child.name, child.pid)
        generator = p.generator(rate, f"step{index}")
        monitor.watch(generator.name, generator.pid)
        generator.wait_exit(s.duration_s + 180, monitor)
        end_s = time.time()
        usage = monitor.stop()
    achieved = (p.published() - before) / s.duration_s
    trigger_ms = duration_ms(s.trigger)
    verdict = p.verify(s.verify_wait_s)
    # The batches that carried the step's data: a job that lags works on it after the generator stopped.
    batches = pipeline_batches(p.influx, start_s + trigger_ms / 1000, time.time())
    windows = [b.duration_ms for b in batches if b.query == PIPELINE_QUERY_WINDOWS and b.rows > 0]
    fresh = freshness_values(probe.samples, start_s * 1000)
    step = {
        "offered_rate": rate, "achieved_rate": round(achieved, 1), "seconds": round(end_s - start_s, 1),
        "batches": len(windows), "batch_p50_ms": percentile(windows, 50), "batch_p95_ms": percentile(windows, 95),
        "batch_max_ms": max(windows, default=None),
        "batch_p95_ms_by_query": {q: percentile([b.duration_ms for b in batches if b.query == q and b.rows > 0], 95)
                                  for q in sorted({b.query for b in batches})},
        "freshness_samples": len(fresh), "freshness_p50_s": percentile(fresh, 50),
        "freshness_p99_s": percentile(fresh, 99), "lost": verdict.get("lost"),
        "double_counted": verdict.get("double_counted"), "expected_so_far": verdict.get("expected"),
        "processes": {name: u.as_dict() for name, u in usage.items()},
    }
    step["failed"] = judge(step, trigger_ms, s.freshness_target_s)
    step["passed"] = not step["failed"]
    return step, usage


def profile_step(p: Pipeline, rate: float) -> list[str]:
    """One more step at ``rate`` with every Python hop under py-spy; the summaries' paths."""
    env = p.env
    env.profiles.mkdir(parents=True, exist_ok=True)
    attached: list[tuple[Process, Path]] = []
    for child in [*p.bridges, p.job]:
        if child is not None:
            raw = env.profiles / f"e2e-{child.name.replace(' ', '-')}.txt"
            attached.append((profiles.attach(child.name, child.pid, raw, env.logs / "e2e-py-spy.log",
                                             subprocesses=child is p.job, rate_hz=50), raw))
    jvm = jvm_profile.java_pid(p.job.pid) if p.job is not None else None
    if jvm is not None and not jvm_profile.start(jvm):
        jvm = None
    generator_raw = env.profiles / "e2e-tsdemo-generate.txt"
    generator = p.generator(rate, "profile")
    generator.wait_healthy(env.ready_timeout_s)  # connected: its start-up stays out of the profile
    attached.append((profiles.attach(generator.name, generator.pid, generator_raw, env.logs / "e2e-py-spy.log"),
                     generator_raw))
    generator.wait_exit(p.s.duration_s + 180)
    summaries = [profiles.detach(recorder, raw) for recorder, raw in attached]
    if jvm is not None:
        summaries.append(jvm_profile.stop(jvm, env.profiles / "e2e-tsdemo-process-jvm.jfr"))
    return [str(x) for x in summaries if x]


def run(env: BenchEnvironment, s: E2EBenchSettings, earlier: list[BenchResult]) -> BenchResult:
    stages = stage_rates(earlier, s)
    rates = ramp(s, stages)
    result = BenchResult("e2e", {"rates": rates, "duration_s": s.duration_s, "batch": s.batch, "bridges": s.bridges,
                                 "trigger": s.trigger, "freshness_target_s": s.freshness_target_s,
                                 "devices": s.devices, "sites": s.sites, "stage_rates": stages})
    mosquitto, kafka, influxdb = env.mosquitto(), env.kafka(), env.influxdb()
    topic = env.topic("bench-e2e")
    env.topic(f"{topic}-dlq", 1)
    endpoints = Endpoints.of(mosquitto, kafka, influxdb, kafka_topic=topic, kafka_dlq_topic=f"{topic}-dlq",
                             influx_database=DATABASE)
    services = ServicePipeline(endpoints, env.logs, {
        "TSDEMO_CHECKPOINT_DIR": str(env.state_dir / "checkpoints" / "e2e"), "TSDEMO_TRIGGER": s.trigger,
        "TSDEMO_SHARE_GROUP": "bench-e2e", "TSDEMO_LOG_LEVEL": "INFO",
    }, ready_timeout_s=env.ready_timeout_s)
    run_tool("tsdemo storage init", tsdemo("storage", "init"), env.logs / "e2e-storage-init.log", services.env)
    influx = InfluxQuery(InfluxSettings(influx_url=influxdb.endpoint, influx_database=DATABASE))
    p = Pipeline(env, s, influx, services, env.state_dir / "ledgers" / "e2e.json")
    steps: list[dict[str, Any]] = []
    best: tuple[dict[str, Any], dict[str, Usage]] | None = None
    failing_rate = None
    try:
        env.say(f"e2e: starting the Spark job and {s.bridges} bridge(s); ramp {', '.join(f'{r:,.0f}' for r in rates)}")
        p.start()
        # The first batches start Python workers, state stores and connections: tens of seconds on a busy
        # machine. A step at the lowest rate, not judged, gets that out of the way.
        env.say(f"e2e: warming up at {rates[0]:,.0f} readings/s for {s.duration_s:g}s")
        p.generator(rates[0], "warmup").wait_exit(s.duration_s + 180)
        warm = p.verify(env.ready_timeout_s)
        result.extra["warmup_verify"] = {k: warm.get(k) for k in ("expected", "stored", "lost", "double_counted")}
        for i, rate in enumerate(rates):
            env.say(f"e2e step {i + 1}/{len(rates)}: {rate:,.0f} readings/s for {s.duration_s:g}s")
            step, usage = run_step(p, rate, i)
            steps.append(step)
            env.say(f"e2e step {i + 1}: achieved {step['achieved_rate']:,.0f}/s, p95 batch "
                    f"{step['batch_p95_ms'] or 0:.0f} ms, p99 freshness {step['freshness_p99_s'] or 0:.1f} s, "
                    f"lost {step['lost']}, double {step['double_counted']}: "
                    + ("pass" if step["passed"] else "FAIL: " + "; ".join(step["failed"])))
            if not step["passed"]:
                failing_rate = rate
                break
            if best is None or step["achieved_rate"] > best[0]["achieved_rate"]:
                best = (step, usage)
        env.say("e2e: final check of the whole run with verify")
        final = p.verify(max(s.verify_wait_s, 120.0))
        phases = phase_means([b for b in pipeline_batches(influx) if b.query == PIPELINE_QUERY_WINDOWS and b.rows > 0])
        result.extra.update(steps=steps, final_verify={k: final.get(k) for k in ("expected", "stored", "lost",
                                                                                  "double_counted")},
                            windows_phases_ms=phases)
        sustained = best[0]["achieved_rate"] if best else 0.0
        subject = Run("pipeline", round(sustained * s.duration_s), 0, s.duration_s,
                      best[1] if best else {}, {"step": best[0]["offered_rate"] if best else None},
                      readings_per_s=sustained)
        slowest = min(stages, key=stages.get) if stages else None  # type: ignore[arg-type]
        baseline = Run(f"slowest stage: {slowest}", 0, 0, 0.0, readings_per_s=stages[slowest]) if slowest else None
        main = Comparison("e2e", f"sustained, {s.bridges} bridges, trigger {s.trigger}", subject, baseline,
                          s.target_ratio if baseline else None)
        if baseline is None:
            main.notes.append("no stage rates in this run: `tsdemo bench all` sets the ramp from them and "
                              "compares against the slowest")
        if failing_rate is None:
            main.notes.append(f"every step passed: the limit is above {rates[-1]:,.0f} readings/s (give --rates)")
        main.notes.append(f"final verify: {final.get('lost')} lost, {final.get('double_counted')} double-counted "
                          f"of {final.get('expected')}")
        stretch = Comparison("e2e", "stretch goal", subject,
                             Run("100,000 readings/s", 0, 0, 0.0, readings_per_s=s.stretch_rate), 1.0)
        result.comparisons += [main, stretch]
        if failing_rate is not None and profiles.wanted(s.profile, False if main.met is None else main.met):
            env.say(f"e2e: one more step at {failing_rate:,.0f} readings/s under py-spy")
            main.profile = ", ".join(profile_step(p, failing_rate)) or None
    finally:
        p.stop()
        influx.close()
    return result
