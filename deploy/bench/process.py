"""``tsdemo bench process``: readings/s of the Spark job beside Spark reading the same Kafka data into a
no-op sink (``deploy.bench.noop_job``), in the same run.

The payloads are preloaded into a fresh topic (``kcat -P``, keyed as the bridge keys them). Two cases:
the default batch (``--max-offsets-per-trigger`` records, 10,000 readings) and a backlog caught up in
big batches (``--catchup-offsets-per-trigger``, 50,000 readings). For each, ``--repeats`` pairs of runs,
job and no-op interleaved and alternating which goes first, each from the earliest offset with its
own checkpoint, the same trigger and batch size. From each run's steady batches (the first
``--warmup-batches`` left out):

- the processing rate, readings per second of batch time: the figure compared; the ratio reported is
  the median pair's, with the spread over all pairs and the load average at each;
- the sustained rate at the offered rate (records per trigger x readings per record / trigger): at
  least the offered rate when 95% of batches finish within the trigger, else at most the processing
  rate (``deploy.bench.spark_batches.sustained``); the e2e ramp measures it directly;
- CPU-seconds per 1,000 readings of each process tree, from its first batch to the end;
- for the job, Spark's own phases per batch (from its ``pipeline`` points): where a batch's time goes.

Unless ``--profile never``, the job's last run of the first case is profiled: py-spy samples its
Python side (driver and pandas workers) and Java Flight Recorder its JVM. The profiles are kept when
the target is missed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from deploy.bench import jvm_profile, profiles
from deploy.bench.environment import BenchEnvironment
from deploy.bench.kafka_offsets import EndOffsets
from deploy.bench.payloads import PayloadSet
from deploy.bench.report import BenchResult, Comparison, Run, interleave
from deploy.bench.resources import ResourceMonitor, Usage
from deploy.bench.settings import ProcessBenchSettings
from deploy.bench.spark_batches import (
    Batch,
    figures,
    from_progress_lines,
    phase_means,
    pipeline_batches,
    steady,
    sustained,
)
from deploy.servers import free_port
from deploy.services.process import run_tool, spawn, tsdemo
from deploy.wait import wait_until
from processing.settings import duration_ms
from servicekit.contract.influx import PIPELINE_QUERY_WINDOWS
from storage.queries import InfluxQuery
from storage.settings import InfluxSettings

QUERIES = (PIPELINE_QUERY_WINDOWS,)  # the job's one query (processing.job.QUERY)
POLL_S = 1.0


def preload_kafka(env: BenchEnvironment, payloads: PayloadSet, topic: str) -> None:
    run_tool("kcat", ["kcat", "-P", "-b", env.kafka().endpoint, "-t", topic, "-K", "\\t", "-l",
                      str(payloads.kafka_file), "-X", "linger.ms=20"], env.logs / "process-preload.log")
    offsets = EndOffsets(env.kafka().endpoint, topic)
    try:
        wait_until(lambda: offsets.total() >= payloads.messages, 60, f"{payloads.messages} records in {topic}",
                   detail=lambda: f"only {offsets.total()} of them there")
    finally:
        offsets.close()


def spark_env(env: BenchEnvironment, s: ProcessBenchSettings, topic: str, name: str,
              offsets: int | None = None) -> dict[str, str]:
    return {
        "TSDEMO_KAFKA_BOOTSTRAP": env.kafka().endpoint, "TSDEMO_KAFKA_TOPIC": topic,
        "TSDEMO_KAFKA_DLQ_TOPIC": f"{topic}-dlq", "TSDEMO_STARTING_OFFSETS": "earliest",
        "TSDEMO_MAX_OFFSETS_PER_TRIGGER": str(offsets or s.max_offsets_per_trigger), "TSDEMO_TRIGGER": s.trigger,
        "TSDEMO_SPARK_MASTER": s.spark_master, "TSDEMO_CHECKPOINT_DIR": str(env.state_dir / "checkpoints" / name),
        "TSDEMO_LOG_LEVEL": "INFO",
    }


def run_noop(env: BenchEnvironment, s: ProcessBenchSettings, payloads: PayloadSet, topic: str, offsets: int,
             target: int, name: str) -> tuple[list[Batch], dict[str, Usage], int]:
    """Returns the batches, the usage from the first batch on, and the Kafka records read before it."""
    progress = env.state_dir / f"{name}-progress.jsonl"
    progress.unlink(missing_ok=True)

    def batches() -> list[Batch]:
        return from_progress_lines(progress.read_text()) if progress.exists() else []

    job = spawn("spark no-op job", [sys.executable, "-m", "deploy.bench.noop_job"], env.logs / f"process-{name}.log",
                {**spark_env(env, s, topic, name, offsets), "TSDEMO_PROGRESS_PATH": str(progress)})
    try:
        job.wait_running_until(lambda: any(b.rows for b in batches()), env.ready_timeout_s, "first batch", every=POLL_S)
        before = sum(b.rows for b in batches())
        with ResourceMonitor() as monitor:
            monitor.watch(job.name, job.pid)
            monitor.watch("kafka", env.kafka().pid)
            job.wait_running_until(lambda: sum(b.rows for b in batches()) >= target, s.timeout_s,
                                   "end of the backlog", every=POLL_S)
            usage = monitor.stop()
    finally:
        job.stop(120)
    return batches(), usage, before


def run_job(env: BenchEnvironment, s: ProcessBenchSettings, payloads: PayloadSet, topic: str, offsets: int,
            target: int, name: str, profile_raw: Path | None
            ) -> tuple[list[Batch], dict[str, Usage], list[str], int]:
    """Returns the batches (from ``pipeline``, with their phases), usage from the first batch on, profile
    summaries, and the Kafka records read before the first batch was reported."""
    database = f"bench_{name.replace('-', '_')}"
    influx_settings = InfluxSettings(influx_url=env.influxdb().endpoint, influx_database=database)
    influx_env = {"TSDEMO_INFLUX_URL": influx_settings.influx_url, "TSDEMO_INFLUX_DATABASE": database}
    run_tool("tsdemo storage init", tsdemo("storage", "init"), env.logs / f"process-{name}-storage-init.log",
             influx_env)
    influx = InfluxQuery(influx_settings)

    def done() -> int:
        return min(sum(b.rows for b in pipeline_batches(influx) if b.query == q) for q in QUERIES)

    job = spawn("tsdemo process", tsdemo("process"), env.logs / f"process-{name}.log",
                {**spark_env(env, s, topic, name, offsets), **influx_env}, health_port=free_port())
    recorder = jvm = None
    summaries: list[str] = []
    try:
        job.wait_running_until(lambda: done() > 0, env.ready_timeout_s, "first batch", every=POLL_S)
        before = done()
        with ResourceMonitor() as monitor:
            monitor.watch(job.name, job.pid)
            for server in ("kafka", "influxdb"):
                monitor.watch(server, env.server_pids().get(server))
            if profile_raw is not None:
                recorder = profiles.attach("tsdemo process", job.pid, profile_raw,
                                           env.logs / "process-py-spy.log", rate_hz=50, subprocesses=True)
                jvm = jvm_profile.java_pid(job.pid)
                if jvm is not None and not jvm_profile.start(jvm):
                    jvm = None
            job.wait_running_until(lambda: done() >= target, s.timeout_s, "end of the backlog", every=POLL_S)
            usage = monitor.stop()
    finally:
        if recorder is not None and profile_raw is not None:
            summaries.append(str(profiles.detach(recorder, profile_raw) or ""))
        if jvm is not None and profile_raw is not None:
            summaries.append(str(jvm_profile.stop(jvm, profile_raw.with_name(f"{profile_raw.stem}-jvm.jfr")) or ""))
        job.stop(120)
        batches = pipeline_batches(influx)
        influx.close()
    return batches, usage, [x for x in summaries if x], before


def cpu_per_1000(usage: Usage | None, records: int, per_row: float) -> float | None:
    """CPU-seconds the process tree spent per 1,000 readings it moved in the measured window."""
    readings = records * per_row
    return round(1000 * usage.cpu_s / readings, 3) if usage is not None and readings > 0 else None


def run_case(env: BenchEnvironment, s: ProcessBenchSettings, payloads: PayloadSet, topic: str, offsets: int,
             label: str, profile_raw: Path | None) -> tuple[Comparison, list[str]]:
    trigger_ms = duration_ms(s.trigger)
    per_row = payloads.readings_per_message
    offered = offsets * per_row / (trigger_ms / 1000)
    # Kafka records each run works through: --readings for the default case, 5 steady batches for catch-up.
    wanted = offsets * (s.warmup_batches + 5) if label == "catch-up" else -(-s.readings // s.batch)
    target = min(payloads.messages, wanted)
    summaries: list[str] = []
    loads: list[float] = []

    def noop_run(i: int) -> Run:
        loads.append(os.getloadavg()[0])
        batches, usage, before = run_noop(env, s, payloads, topic, offsets, target, f"{label}-noop-{i}")
        f = figures(steady(batches, s.warmup_batches), per_row)
        rate_, bound = sustained(f, offered, trigger_ms)
        return Run("spark -> noop sink", f.readings, f.rows, f.busy_s, usage, {
            **f.as_dict(), "sustained_rate": round(rate_), "sustained_bound": bound,
            "phases_ms": phase_means(steady(batches, s.warmup_batches)),
            "cpu_s_per_1000_readings": cpu_per_1000(usage.get("spark no-op job"), target - before, per_row)},
            readings_per_s=f.processing_rate)

    def job_run(i: int) -> Run:
        loads.append(os.getloadavg()[0])
        raw = profile_raw if i == s.repeats - 1 else None
        batches, usage, summary, before = run_job(env, s, payloads, topic, offsets, target, f"{label}-job-{i}", raw)
        summaries.extend(summary)
        ours = steady([b for b in batches if b.query in QUERIES], s.warmup_batches)
        f = figures(ours, per_row)
        rate_, bound = sustained(f, offered, trigger_ms)
        return Run("tsdemo process", f.readings, f.rows, f.busy_s, usage, {
            **f.as_dict(), "sustained_rate": round(rate_), "sustained_bound": bound,
            "phases_ms": phase_means(ours),
            "cpu_s_per_1000_readings": cpu_per_1000(usage.get("tsdemo process"), target - before, per_row)},
            readings_per_s=f.processing_rate)

    trials = interleave(s.repeats, job_run, noop_run, env.say)
    case = f"{label}: {offsets * per_row:,.0f} readings a batch, offered {offered:,.0f} readings/s, trigger {s.trigger}"
    comparison = Comparison.of_trials("process", case, trials, s.target_ratio)
    job_d, noop_d = comparison.subject.details, comparison.baseline.details if comparison.baseline else {}
    comparison.notes.append(
        f"{label}: load average at each run's start {', '.join(f'{x:.1f}' for x in loads)}; median trial: p95 batch "
        f"{job_d['batch_p95_ms'] or 0:.0f} ms for the job, {noop_d.get('batch_p95_ms') or 0:.0f} ms no-op; sustained "
        f"{job_d['sustained_bound']} {job_d['sustained_rate']:,} readings/s (no-op {noop_d.get('sustained_bound')} "
        f"{noop_d.get('sustained_rate', 0):,}); CPU-seconds per 1,000 readings: job "
        f"{job_d['cpu_s_per_1000_readings']}, no-op {noop_d.get('cpu_s_per_1000_readings')}")
    comparison.notes.append(f"{label}: the job's batch phases (mean ms): {job_d['phases_ms']}; no-op "
                            f"{noop_d.get('phases_ms')}")
    return comparison, summaries


def run(env: BenchEnvironment, s: ProcessBenchSettings, earlier: list[BenchResult]) -> BenchResult:
    # ``earlier`` (what the benches before this one measured) is every bench's; this one needs none of it.
    env.kafka()
    env.influxdb()
    cases = [("steady", s.max_offsets_per_trigger)]
    readings = s.readings
    if s.catchup_offsets_per_trigger:
        cases.append(("catch-up", s.catchup_offsets_per_trigger))
        readings = max(readings, s.catchup_offsets_per_trigger * s.batch * (s.warmup_batches + 5))
    payloads = env.payloads(s.devices, s.sites, s.batch, readings)
    result = BenchResult("process", {
        "readings": readings, "batch": s.batch, "trigger": s.trigger, "cases": dict(cases), "repeats": s.repeats,
        "warmup_batches": s.warmup_batches, "spark_master": s.spark_master, "payloads": payloads.as_dict(),
    })
    topic = env.topic("bench-process")
    env.topic(f"{topic}-dlq", 1)
    env.say(f"process: preloading {payloads.messages:,} records ({payloads.readings:,} readings) into Kafka")
    preload_kafka(env, payloads, topic)
    raw = env.profiles / "process-job.txt" if s.profile != "never" else None
    if raw is not None:
        raw.parent.mkdir(parents=True, exist_ok=True)
    summaries: list[str] = []
    for label, offsets in cases:
        env.say(f"process {label}: {s.repeats} x (the job, Spark into the no-op sink), interleaved, "
                f"{offsets:,} records a batch (starting Spark takes a while)")
        comparison, summary = run_case(env, s, payloads, topic, offsets, label, raw if label == "steady" else None)
        summaries += summary
        result.comparisons.append(comparison)
        env.say(f"process {label}: ratio {comparison.ratio or 0:.2f} (median run)")
    first = result.comparisons[0]
    if profiles.wanted(s.profile, first.met) and summaries:
        first.profile = ", ".join(summaries)
    elif raw is not None:
        # Profiled in passing (Spark cannot be started twice within the budget); kept only when asked.
        for path in raw.parent.glob(f"{raw.stem}*"):
            path.unlink()
    return result
