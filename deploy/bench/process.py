"""``tsdemo bench process``: readings/s of the Spark job beside Spark reading the same Kafka data into a
no-op sink (``deploy.bench.noop_job``) in the same run.

The payloads are preloaded into a fresh topic (``kcat -P``, keyed as the bridge keys them); both runs
start from the earliest offset with the same trigger and ``--max-offsets-per-trigger``, so they work
through the same backlog in batches of the same size. From each run's steady batches (the first
``--warmup-batches`` left out):

- the processing rate, readings per second of batch time: the figure compared, for the job its
  slowest query's (its three queries each read every record and share the cores);
- the sustained rate at the offered rate (records per trigger x readings per record / trigger): at
  least the offered rate when 95% of batches finish within the trigger, else at most the processing
  rate (``deploy.bench.spark_batches.sustained``); the e2e ramp measures it directly;
- for the job, Spark's own phases per batch from its event log: where a batch's time goes.

Unless ``--profile never``, the job is profiled during its run (Spark is too slow to start for a
second, profiled run): py-spy samples its Python side (driver, the pandas workers of its anomaly
query) and Java Flight Recorder its JVM. The profiles are kept when the target is missed.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from deploy.bench import jvm_profile, profiles
from deploy.bench.children import Child, run_tool, spawn, tsdemo
from deploy.bench.environment import BenchEnvironment
from deploy.bench.kafka_offsets import EndOffsets
from deploy.bench.payloads import PayloadSet
from deploy.bench.report import BenchResult, Comparison, Run
from deploy.bench.resources import ResourceMonitor, Usage
from deploy.bench.settings import ProcessBenchSettings
from deploy.bench.spark_batches import (
    Batch,
    figures,
    from_event_log,
    from_progress_lines,
    phase_means,
    pipeline_batches,
    steady,
    sustained,
)
from deploy.local.servers import free_port
from processing.settings import duration_ms
from storage.queries import InfluxQuery
from storage.settings import InfluxSettings

QUERIES = ("windows",)  # the job's one query (processing.job.QUERY)
POLL_S = 1.0


def preload_kafka(env: BenchEnvironment, payloads: PayloadSet, topic: str) -> None:
    run_tool("kcat", ["kcat", "-P", "-b", env.kafka().endpoint, "-t", topic, "-K", "\\t", "-l",
                      str(payloads.kafka_file), "-X", "linger.ms=20"], env.logs / "process-preload.log")
    offsets = EndOffsets(env.kafka().endpoint, topic)
    try:
        deadline = time.monotonic() + 60
        while (held := offsets.total()) < payloads.messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {held} of {payloads.messages} records reached {topic}")
            time.sleep(0.2)
    finally:
        offsets.close()


def spark_env(env: BenchEnvironment, s: ProcessBenchSettings, topic: str, name: str) -> dict[str, str]:
    return {
        "TSDEMO_KAFKA_BOOTSTRAP": env.kafka().endpoint, "TSDEMO_KAFKA_TOPIC": topic,
        "TSDEMO_KAFKA_DLQ_TOPIC": f"{topic}-dlq", "TSDEMO_STARTING_OFFSETS": "earliest",
        "TSDEMO_MAX_OFFSETS_PER_TRIGGER": str(s.max_offsets_per_trigger), "TSDEMO_TRIGGER": s.trigger,
        "TSDEMO_SPARK_MASTER": s.spark_master, "TSDEMO_CHECKPOINT_DIR": str(env.state_dir / "checkpoints" / name),
        "TSDEMO_LOG_LEVEL": "INFO",
    }


def event_log_args(directory: Path) -> str:
    """``PYSPARK_SUBMIT_ARGS`` turning on Spark's event log: every batch's progress, phases included."""
    directory.mkdir(parents=True, exist_ok=True)
    # Plain JSON lines in one file: Spark 4 otherwise rolls and zstd-compresses its event logs.
    return (f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file://{directory} "
            "--conf spark.eventLog.compress=false --conf spark.eventLog.rolling.enabled=false pyspark-shell")


def _wait(child: Child, done: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if not child.running():
            raise RuntimeError(f"{child.name} exited with status {child.proc.returncode} before {what}\n"
                               f"{child.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name}: no {what} after {timeout_s:.0f}s\n{child.tail()}")
        time.sleep(POLL_S)


def run_noop(env: BenchEnvironment, s: ProcessBenchSettings, payloads: PayloadSet,
             topic: str) -> tuple[list[Batch], dict[str, Usage]]:
    progress = env.state_dir / "noop-progress.jsonl"
    progress.unlink(missing_ok=True)

    def batches() -> list[Batch]:
        return from_progress_lines(progress.read_text()) if progress.exists() else []

    job = spawn("spark no-op job", [sys.executable, "-m", "deploy.bench.noop_job"], env.logs / "process-noop.log",
                {**spark_env(env, s, topic, "noop"), "TSDEMO_PROGRESS_PATH": str(progress)})
    try:
        _wait(job, lambda: any(b.rows for b in batches()), env.ready_timeout_s, "first batch")
        with ResourceMonitor() as monitor:
            monitor.watch(job.name, job.pid)
            monitor.watch("kafka", env.kafka().pid)
            _wait(job, lambda: sum(b.rows for b in batches()) >= payloads.messages, s.timeout_s, "end of the backlog")
            usage = monitor.stop()
    finally:
        job.stop(120)
    env.say(f"process no-op: {len(batches())} batches")
    return batches(), usage


def run_job(env: BenchEnvironment, s: ProcessBenchSettings, payloads: PayloadSet, topic: str,
            profile_raw: Path | None) -> tuple[list[Batch], dict[str, Usage], list[Batch], list[str]]:
    influx_settings = InfluxSettings(influx_url=env.influxdb().endpoint, influx_database="bench_process")
    influx_env = {"TSDEMO_INFLUX_URL": influx_settings.influx_url, "TSDEMO_INFLUX_DATABASE": "bench_process"}
    run_tool("tsdemo storage init", tsdemo("storage", "init"), env.logs / "process-storage-init.log", influx_env)
    event_logs = env.state_dir / "spark-events"
    shutil.rmtree(event_logs, ignore_errors=True)
    influx = InfluxQuery(influx_settings)

    def per_query() -> dict[str, int]:
        totals = {q: 0 for q in QUERIES}
        for b in pipeline_batches(influx):
            if b.query in totals:
                totals[b.query] += b.rows
        return totals

    job = spawn("tsdemo process", tsdemo("process"), env.logs / "process-job.log",
                {**spark_env(env, s, topic, "job"), **influx_env,
                 "PYSPARK_SUBMIT_ARGS": event_log_args(event_logs)}, health_port=free_port())
    recorder = jvm = None
    summaries: list[str] = []
    try:
        _wait(job, lambda: per_query()["windows"] > 0, env.ready_timeout_s, "first batch")
        with ResourceMonitor() as monitor:
            monitor.watch(job.name, job.pid)
            for name in ("kafka", "influxdb"):
                monitor.watch(name, env.server_pids().get(name))
            if profile_raw is not None:
                recorder = profiles.attach("tsdemo process", job.pid, profile_raw,
                                           env.logs / "process-py-spy.log", rate_hz=50, subprocesses=True)
                jvm = jvm_profile.java_pid(job.pid)
                if jvm is not None and not jvm_profile.start(jvm):
                    jvm = None
            _wait(job, lambda: min(per_query().values()) >= payloads.messages, s.timeout_s, "end of the backlog")
            usage = monitor.stop()
    finally:
        if recorder is not None and profile_raw is not None:
            summaries.append(str(profiles.detach(recorder, profile_raw) or ""))
        if jvm is not None and profile_raw is not None:
            summaries.append(str(jvm_profile.stop(jvm, profile_raw.with_name(f"{profile_raw.stem}-jvm.jfr")) or ""))
        job.stop(120)
        batches = pipeline_batches(influx)
        influx.close()
    return batches, usage, from_event_log(event_logs), [x for x in summaries if x]


def run(env: BenchEnvironment, s: ProcessBenchSettings) -> BenchResult:
    trigger_ms = duration_ms(s.trigger)
    env.kafka()
    env.influxdb()
    payloads = env.payloads(s.devices, s.sites, s.batch, s.readings)
    per_row = payloads.readings_per_message
    offered = s.max_offsets_per_trigger * per_row / (trigger_ms / 1000)
    result = BenchResult("process", {
        "readings": s.readings, "batch": s.batch, "trigger": s.trigger,
        "max_offsets_per_trigger": s.max_offsets_per_trigger, "offered_rate": round(offered, 1),
        "warmup_batches": s.warmup_batches, "spark_master": s.spark_master, "payloads": payloads.as_dict(),
    })
    topic = env.topic("bench-process")
    env.topic(f"{topic}-dlq", 1)
    env.say(f"process: preloading {payloads.messages:,} records ({payloads.readings:,} readings) into Kafka")
    preload_kafka(env, payloads, topic)

    env.say("process: Spark into the no-op sink (starting Spark takes a while)")
    noop_batches, noop_usage = run_noop(env, s, payloads, topic)
    noop = figures(steady(noop_batches, s.warmup_batches), per_row)
    noop_rate, noop_bound = sustained(noop, offered, trigger_ms)
    baseline = Run("spark -> noop sink", noop.readings, noop.rows, noop.busy_s, noop_usage,
                   {**noop.as_dict(), "sustained_rate": round(noop_rate), "sustained_bound": noop_bound,
                    "phases_ms": phase_means(steady(noop_batches, s.warmup_batches))},
                   readings_per_s=noop.processing_rate)
    env.say(f"process no-op: {noop.processing_rate:,.0f} readings/s of batch time, p95 batch {noop.p95_ms:.0f} ms")

    env.say("process: tsdemo process")
    raw = env.profiles / "process-job.txt" if s.profile != "never" else None
    if raw is not None:
        raw.parent.mkdir(parents=True, exist_ok=True)
    job_batches, job_usage, logged, summaries = run_job(env, s, payloads, topic, raw)
    per_query = {}
    for query in QUERIES:
        mine = steady([b for b in job_batches if b.query == query], s.warmup_batches)
        f = figures(mine, per_row)
        rate_, bound = sustained(f, offered, trigger_ms)
        logged_q = steady([b for b in logged if b.query == query], s.warmup_batches)
        per_query[query] = {**f.as_dict(), "sustained_rate": round(rate_), "sustained_bound": bound,
                            "phases_ms": phase_means(logged_q)}
    slowest = min(per_query, key=lambda q: per_query[q]["processing_rate"])
    worst = per_query[slowest]
    subject = Run("tsdemo process", worst["readings"], worst["rows"], worst["busy_s"], job_usage,
                  {"slowest_query": slowest, "queries": per_query}, readings_per_s=worst["processing_rate"])
    comparison = Comparison("process", f"offered {offered:,.0f} readings/s, trigger {s.trigger}", subject,
                            baseline, s.target_ratio)
    job_rate = min(q["sustained_rate"] for q in per_query.values())
    bound = ">=" if all(q["sustained_bound"] == ">=" for q in per_query.values()) else "<="
    comparison.notes.append(
        f"sustained with batches under the trigger: {bound} {job_rate:,} readings/s for the job "
        f"(p95 batch: " + ", ".join(f"{q} {v['batch_p95_ms']:.0f} ms" for q, v in per_query.items() if
                                    v["batch_p95_ms"] is not None)
        + f"), {noop_bound} {noop_rate:,.0f} for the no-op sink; slowest query: {slowest}")
    if profiles.wanted(s.profile, comparison.met) and summaries:
        comparison.profile = ", ".join(summaries)
    elif raw is not None:
        # Profiled in passing (Spark cannot be started twice within the budget); kept only when asked.
        for path in raw.parent.glob(f"{raw.stem}*"):
            path.unlink()
    env.say(f"process: {subject.rate:,.0f} readings/s of batch time ({slowest}), ratio {comparison.ratio or 0:.2f}")
    result.comparisons.append(comparison)
    return result
