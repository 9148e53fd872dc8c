"""``tsdemo bench ingest``: readings/s through the MQTT -> Kafka bridge at QoS 1 with 1, 2 and 4 bridge
processes (one shared subscription group), beside ``mosquitto_sub | kcat -P`` moving the same messages
between the same servers in the same run.

Each run preloads the messages into the broker: the movers connect once so the broker holds a
persistent session with their subscription, leave, and the payloads are published at QoS 1 into
their queues. Then the movers start again and drain them; the rate is taken from the Kafka topic's
end offsets, from the moment every mover is up (and something moved) until all messages are in Kafka.
Afterwards the sessions are dropped (a clean-start connect under the same client id), so the next
run's preload does not queue into them.

The baseline is the same shape with C tools: ``mosquitto_sub -v`` (same receive maximum as a
bridge) piped into ``kcat -P`` (acks=all, idempotent, keyed by topic). It does not acknowledge MQTT
only after Kafka, so it is what moving the bytes costs without the bridge's guarantees.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from deploy.bench import profiles
from deploy.bench.environment import BenchEnvironment
from deploy.bench.kafka_offsets import EndOffsets, watch_drain
from deploy.bench.payloads import PayloadSet
from deploy.bench.report import BenchResult, Comparison, Run, interleave
from deploy.bench.resources import ResourceMonitor, tree_sample
from deploy.bench.settings import IngestBenchSettings
from deploy.bench.stats import drain_rate, median
from deploy.servers import free_port
from deploy.services.process import Process, run_tool, spawn, tsdemo
from ingest.metrics import PRODUCER_FIGURES
from servicekit.contract import TOPIC_FILTER, topic_for

SESSION_EXPIRY_S = 3600
#: The bridge's producer gauges, by their Prometheus name, under kafka-python's name in the report.
PRODUCER_METRICS = {name: key for key, (name, _doc) in PRODUCER_FIGURES.items()}
STOP_TIMEOUT_S = 60.0


def mqtt_args(env: BenchEnvironment) -> list[str]:
    return ["-h", "127.0.0.1", "-p", str(env.mosquitto().port), "-V", "mqttv5"]


def preload(env: BenchEnvironment, payloads: PayloadSet, tag: str) -> None:
    """Publish every payload at QoS 1 (one mosquitto_pub per topic, all at once) into the waiting sessions."""
    log = env.logs / f"ingest-{tag}-preload.log"
    with contextlib.ExitStack() as files:
        children = [
            spawn("mosquitto_pub", ["mosquitto_pub", *mqtt_args(env), "-q", "1", "-M", "1000",
                                    "-i", f"bench-preload-{tag}-{i}", "-t", topic, "-l"],
                  log, stdin=files.enter_context(open(path, "rb")))
            for i, (topic, path) in enumerate(payloads.topic_files.items())
        ]
        for child in children:
            if child.wait_exit(600) != 0:
                raise RuntimeError(f"preloading the broker failed\n{child.tail()}")


def forget_sessions(env: BenchEnvironment, client_ids: list[str], log: Path) -> None:
    """Drop the broker's sessions (and queues) of ``client_ids``: a clean-start connect, session expiry 0."""
    for client_id in client_ids:
        run_tool("mosquitto_sub", ["mosquitto_sub", *mqtt_args(env), "-i", client_id, "-x", "0",
                                   "-t", topic_for("_bench", "none"), "-E"], log)


def _bridge_env(env: BenchEnvironment, s: IngestBenchSettings, topic: str, group: str, client_id: str,
                kafka_client: str = "kafka-python") -> dict:
    return {
        "TSDEMO_KAFKA_CLIENT": kafka_client,
        "TSDEMO_MQTT_HOST": "127.0.0.1", "TSDEMO_MQTT_PORT": str(env.mosquitto().port),
        "TSDEMO_KAFKA_BOOTSTRAP": env.kafka().endpoint, "TSDEMO_KAFKA_TOPIC": topic,
        "TSDEMO_KAFKA_DLQ_TOPIC": f"{topic}-dlq", "TSDEMO_SHARE_GROUP": group, "TSDEMO_CLIENT_ID": client_id,
        "TSDEMO_MAX_INFLIGHT": str(s.bridge_max_inflight), "TSDEMO_SESSION_EXPIRY_S": str(SESSION_EXPIRY_S),
        "TSDEMO_LOG_LEVEL": "INFO",
    }


def _start_bridges(env: BenchEnvironment, s: IngestBenchSettings, topic: str, group: str, ids: list[str],
                   tag: str, kafka_client: str) -> list[Process]:
    return [spawn(f"bridge-{i}", tsdemo("ingest"), env.logs / f"ingest-{tag}-bridge-{i}.log",
                  _bridge_env(env, s, topic, group, client_id, kafka_client), health_port=free_port())
            for i, client_id in enumerate(ids)]


def _stop(children: list[Process]) -> None:
    for child in children:
        child.stop(STOP_TIMEOUT_S)


def _cpu_s(movers: list[Process]) -> float:
    return sum(sample[0] for m in movers if (sample := tree_sample(m.pid)) is not None)


def _drained(env: BenchEnvironment, s: IngestBenchSettings, payloads: PayloadSet, tool: str, topic: str,
             movers: list[Process], monitor: ResourceMonitor, offsets: EndOffsets, details: dict,
             interval_s: float = 0.1) -> Run:
    """The run of ``movers`` draining the preloaded queue. Beside the rate, ``details`` gets the movers'
    CPU seconds per 1,000 readings over the drain itself (from the moment all were ready), so start-up
    is left out and the figure compares across 1, 2 and 4 bridges."""
    cpu_at_ready: list[float] = []

    def ready() -> bool:
        if not all(m.healthy() for m in movers):
            return False
        cpu_at_ready.append(_cpu_s(movers))
        return True

    drain = watch_drain(offsets, 0, payloads.messages, s.timeout_s, ready=ready, interval_s=interval_s)
    cpu_at_end = _cpu_s(movers)
    usage = monitor.stop()
    per_s = drain_rate(drain.samples, payloads.messages, drain.ready_at)
    if not drain.done or per_s is None:
        moved = drain.samples[-1][1] if drain.samples else 0
        raise RuntimeError(f"{tool}: only {moved} of {payloads.messages} messages reached Kafka in "
                           f"{s.timeout_s:.0f}s\n" + "\n".join(m.tail(10) for m in movers))
    moved_at_ready = max((n for t, n in drain.samples if drain.ready_at is not None and t <= drain.ready_at),
                         default=0)
    messages = payloads.messages - moved_at_ready
    if cpu_at_ready and messages > 0:
        readings = messages * payloads.readings_per_message
        # Six places: at four (0.0016 s) one step of the last digit was 6 %, a third of the 20 % flatness target.
        details["cpu_s_per_1k_readings"] = round((cpu_at_end - cpu_at_ready[0]) / readings * 1000, 6)
    seconds = payloads.messages / per_s
    return Run(tool, payloads.readings, payloads.messages, seconds, usage, details)


def scrape_producer_figures(bridges: list[Process]) -> dict[str, float]:
    """The bridges' Kafka producer figures from their /metrics (the mean over bridges)."""
    totals: dict[str, list[float]] = {}
    for bridge in bridges:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{bridge.health_port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            if family.name in PRODUCER_METRICS:
                for sample in family.samples:
                    if math.isfinite(sample.value):
                        totals.setdefault(PRODUCER_METRICS[family.name], []).append(sample.value)
    return {name: round(sum(v) / len(v), 2) for name, v in totals.items()}


def run_bridges(env: BenchEnvironment, s: IngestBenchSettings, payloads: PayloadSet, count: int,
                profile: bool = False, trial: int = 0, kafka_client: str = "kafka-python") -> tuple[Run, list[str]]:
    """Drain a preloaded queue with ``count`` bridges; the run and, when profiled, the profile summaries."""
    short = "kp" if kafka_client == "kafka-python" else "rd"
    tag = f"{count}b-{short}-t{trial}" + ("-profile" if profile else "")
    topic = env.topic(f"bench-ingest-{tag}")
    env.topic(f"{topic}-dlq", 1)
    group, ids = f"bench-{tag}", [f"bench-bridge-{tag}-{i}" for i in range(count)]
    bridges = _start_bridges(env, s, topic, group, ids, tag, kafka_client)
    try:
        for bridge in bridges:
            bridge.wait_healthy(env.ready_timeout_s)
    finally:
        _stop(bridges)
    preload(env, payloads, tag)
    summaries: list[str] = []
    offsets = EndOffsets(env.kafka().endpoint, topic)
    recorders: list[tuple[Process, Path]] = []
    try:
        with ResourceMonitor() as monitor:
            for name, pid in env.server_pids().items():
                monitor.watch(name, pid)
            bridges = _start_bridges(env, s, topic, group, ids, tag, kafka_client)
            try:
                for bridge in bridges:
                    monitor.watch(bridge.name, bridge.pid)
                    if profile:
                        raw = env.profiles / f"ingest-{tag}-{bridge.name}.txt"
                        raw.parent.mkdir(parents=True, exist_ok=True)
                        recorders.append((profiles.attach(bridge.name, bridge.pid, raw,
                                                          env.logs / f"ingest-{tag}-py-spy.log"), raw))
                run = _drained(env, s, payloads, f"tsdemo ingest x{count} ({kafka_client})", topic, bridges,
                               monitor, offsets, {"bridges": count, "share_group": group, "kafka_client": kafka_client})
                run.details["kafka_producer"] = scrape_producer_figures(bridges)
            finally:
                for recorder, raw in recorders:
                    summary = profiles.detach(recorder, raw)
                    if summary:
                        summaries.append(str(summary))
                _stop(bridges)
    finally:
        offsets.close()
        forget_sessions(env, ids, env.logs / f"ingest-{tag}-sessions.log")
    return run, summaries


def run_baseline(env: BenchEnvironment, s: IngestBenchSettings, payloads: PayloadSet, tag: str = "baseline") -> Run:
    client_id = f"bench-sub-{tag}"
    topic = env.topic(f"bench-ingest-{tag}")
    log = env.logs / f"ingest-{tag}.log"
    sub_cmd = ["mosquitto_sub", *mqtt_args(env), "-i", client_id, "-c", "-x", str(SESSION_EXPIRY_S), "-q", "1",
               "-t", TOPIC_FILTER]
    run_tool("mosquitto_sub", [*sub_cmd, "-E"], log)  # the session and its subscription, then away
    preload(env, payloads, tag)
    offsets = EndOffsets(env.kafka().endpoint, topic)
    try:
        with ResourceMonitor() as monitor:
            for name, pid in env.server_pids().items():
                monitor.watch(name, pid)
            # kcat sends the last lines it read only when more input comes or the input ends, so
            # mosquitto_sub exits after the preloaded count (-C), ending kcat's input.
            sub = spawn("mosquitto_sub", [*sub_cmd, "-v", "-C", str(payloads.messages), "-D", "connect",
                                          "receive-maximum", str(s.bridge_max_inflight)], log, stdout=subprocess.PIPE)
            assert sub.proc.stdout is not None
            kcat = spawn("kcat", ["kcat", "-P", "-b", env.kafka().endpoint, "-t", topic, "-K", " ",
                                  "-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=5"],
                         env.logs / f"ingest-{tag}-kcat.log", stdin=sub.proc.stdout)
            sub.proc.stdout.close()  # kcat holds the pipe now; it sees EOF when mosquitto_sub exits
            monitor.watch(sub.name, sub.pid)
            monitor.watch(kcat.name, kcat.pid)
            try:
                # Sampled finer: the C tools drain in about a second, where 0.1 s would be a tenth of it.
                return _drained(env, s, payloads, "mosquitto_sub | kcat -P", topic, [sub, kcat], monitor, offsets,
                                {"receive_maximum": s.bridge_max_inflight}, interval_s=0.02)
            finally:
                sub.stop(10)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    kcat.proc.wait(30)  # its input ended: it flushes and exits by itself
                kcat.stop(10)
    finally:
        offsets.close()
        forget_sessions(env, [client_id], log)


def run(env: BenchEnvironment, s: IngestBenchSettings, earlier: list[BenchResult]) -> BenchResult:
    # ``earlier`` (what the benches before this one measured) is every bench's; this one needs none of it.
    result = BenchResult("ingest", {"readings": s.readings, "batch": s.batch, "bridge_counts": s.bridge_counts,
                                    "bridge_max_inflight": s.bridge_max_inflight, "devices": s.devices,
                                    "sites": s.sites, "repeats": s.repeats})
    env.mosquitto()
    env.kafka()
    payloads = env.payloads(s.devices, s.sites, s.batch, s.readings)
    result.config["payloads"] = payloads.as_dict()
    for kafka_client in s.kafka_clients:
        per_count = []
        for count in s.bridge_counts:
            case = f"{count} bridge{'s' if count > 1 else ''}, QoS 1, {kafka_client}"
            env.say(f"ingest {case}: against mosquitto_sub | kcat -P, {payloads.messages:,} messages, "
                    f"{s.repeats} interleaved trials")
            trials = interleave(
                s.repeats,
                lambda i, count=count, client=kafka_client: run_bridges(env, s, payloads, count, trial=i,
                                                                        kafka_client=client)[0],
                lambda i, count=count, client=kafka_client: run_baseline(env, s, payloads,
                                                                         f"baseline-{count}b-{client}-t{i}"),
                env.say,
            )
            comparison = Comparison.of_trials("ingest", case, trials, s.target_ratio)
            cpu = [t[0].details["cpu_s_per_1k_readings"] for t in trials if "cpu_s_per_1k_readings" in t[0].details]
            if cpu:
                comparison.subject.details["cpu_s_per_1k_readings_median"] = median(cpu)
                producer = comparison.subject.details.get("kafka_producer")
                comparison.notes.append(f"bridge CPU {median(cpu):.5f} s per 1,000 readings (all bridges, median of "
                                        f"{len(cpu)}); Kafka producer: {producer}")
            env.say(f"ingest {case}: ratio {comparison.ratio or 0:.2f} (median of {s.repeats})")
            result.comparisons.append(comparison)
            per_count.append(comparison)
        flat = [c.subject.details.get("cpu_s_per_1k_readings_median") for c in per_count]
        if len(flat) > 1 and all(flat):
            spread = max(flat) / min(flat) - 1  # type: ignore[type-var,operator]
            result.extra[f"cpu_per_1k_readings_spread_{kafka_client}"] = round(spread, 3)
            per_count[-1].notes.append(
                f"{kafka_client}: bridge CPU per 1,000 readings at {', '.join(map(str, s.bridge_counts))} bridges: "
                + ", ".join(f"{x:.5f}" for x in flat) + f" s (highest {spread:.0%} above lowest; target within 20%)")
    missed = next((c for c in result.comparisons if profiles.wanted(s.profile, c.met)), None)
    if missed is not None:
        count, client = int(missed.subject.details["bridges"]), str(missed.subject.details["kafka_client"])
        env.say(f"ingest: profiling {count} bridge(s) ({client}) with py-spy")
        _, summaries = run_bridges(env, s, payloads, count, profile=True, kafka_client=client)
        missed.profile = ", ".join(summaries) or None
    return result
