"""``tsdemo bench generate``: readings/s and messages/s the fleet generator publishes at each QoS and
batch size, beside ``mosquitto_pub`` publishing the same payloads to the same broker in the same run.

The generator runs as its container runs it, told to go as fast as it can (a rate it cannot reach)
for a fixed count. ``mosquitto_pub -l`` publishes the pre-rendered payloads, one process per topic
file, all at once (each process waits a fraction of a second before it exits; one after another,
those waits would add up); a baseline over in less than a second runs again with the payloads
repeated, so one hiccup does not decide it. Both are timed by the same subscriber, from the first
message's arrival to the last (``deploy.bench.arrivals``), so start-up is left out for both alike.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import threading
from pathlib import Path
from typing import IO

from deploy.bench import profiles
from deploy.bench.arrivals import Arrivals
from deploy.bench.environment import BenchEnvironment
from deploy.bench.payloads import PayloadSet
from deploy.bench.report import BenchResult, Comparison, Run, interleave
from deploy.bench.resources import ResourceMonitor, Usage
from deploy.bench.settings import GenerateBenchSettings
from deploy.servers import Mosquitto, free_port
from deploy.services.process import spawn, tsdemo
from servicekit.contract.ledger import load_ledger

#: "As fast as it can": a target its pacer never holds it back from.
FLAT_OUT_RATE = 10_000_000
RUN_TIMEOUT_S = 900.0
#: How long the last messages may take to reach the subscriber after the publisher is done.
ARRIVAL_GRACE_S = 30.0
#: The baseline publishes its payloads again, up to MAX_REPEAT times over, until it lasts this long.
MIN_BASELINE_S = 1.0
MAX_REPEAT = 50
#: Seconds of publishing a profile samples: a few hundred samples per busy thread at 100 Hz.
PROFILE_S = 8.0


def generator_command(s: GenerateBenchSettings, batch: int, qos: int, count: int, ledger: Path,
                      client_id: str, rate: float = FLAT_OUT_RATE) -> list[str]:
    return tsdemo(
        "generate", "--count", str(count), "--rate", str(rate), "--batch", str(batch), "--qos", str(qos),
        "--devices", str(s.devices), "--sites", str(s.sites), "--max-inflight", str(s.max_inflight),
        "--client-id", client_id, "--ledger-path", str(ledger), "--log-level", "INFO",
        "--processes", str(processes(s, batch)),
    )


def processes(s: GenerateBenchSettings, batch: int) -> int:
    return s.generator_processes if batch > 1 else 1


def mqtt_env(mosquitto: Mosquitto) -> dict[str, str]:
    return {"TSDEMO_MQTT_HOST": "127.0.0.1", "TSDEMO_MQTT_PORT": str(mosquitto.port)}


def _arrivals(env: BenchEnvironment, tag: str) -> Arrivals:
    mosquitto = env.mosquitto()
    return Arrivals("127.0.0.1", mosquitto.port, env.state_dir / "arrivals" / f"{tag}.txt",
                    env.logs / f"generate-{tag}-arrivals.log")


def _timed_run(tool: str, arrivals: Arrivals, expected: int, readings_per_message: float,
               usage: dict[str, Usage], details: dict) -> Run:
    window = arrivals.wait_for(expected, ARRIVAL_GRACE_S)
    if window is None or window.seconds <= 0:
        raise RuntimeError(f"{tool}: too few messages arrived to time the run ({window})")
    if window.messages < expected:
        details["arrived"] = f"{window.messages} of {expected} messages"
    return Run(tool, round(window.messages * readings_per_message), window.messages, window.seconds, usage, details)


def run_generator(env: BenchEnvironment, s: GenerateBenchSettings, payloads: PayloadSet, batch: int,
                  qos: int, tag: str) -> Run:
    mosquitto = env.mosquitto()
    ledger = env.state_dir / "ledgers" / f"generate-{tag}.json"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    log = env.logs / f"generate-{tag}.log"
    cmd = generator_command(s, batch, qos, payloads.readings, ledger, f"bench-gen-{tag}")
    with _arrivals(env, f"{tag}-generator") as arrivals:
        with ResourceMonitor() as monitor:
            monitor.watch("mosquitto", mosquitto.pid)
            child = spawn("tsdemo generate", cmd, log, mqtt_env(mosquitto))
            monitor.watch(child.name, child.pid)
            status = child.wait_exit(RUN_TIMEOUT_S, monitor)
            usage = monitor.stop()
        if status != 0:
            raise RuntimeError(f"tsdemo generate ended with status {status}\n{child.tail()}")
        header = load_ledger(ledger).header
        published, messages = int(header["published"]), int(header["messages_acked"])
        return _timed_run("tsdemo generate", arrivals, messages, published / messages, usage,
                          {"published": published, "log": str(log)})


def _feed(pipe: IO[bytes], data: bytes, times: int) -> None:
    with contextlib.suppress(BrokenPipeError), pipe:
        for _ in range(times):
            pipe.write(data)


def run_mosquitto_pub(env: BenchEnvironment, payloads: PayloadSet, qos: int, max_inflight: int, tag: str,
                      repeat: int = 1) -> Run:
    """One mosquitto_pub per topic file, all at once, each publishing its file ``repeat`` times."""
    mosquitto = env.mosquitto()
    log = env.logs / f"generate-{tag}-mosquitto_pub.log"
    with _arrivals(env, f"{tag}-mosquitto_pub-x{repeat}") as arrivals:
        with ResourceMonitor() as monitor:
            monitor.watch("mosquitto", mosquitto.pid)
            children, feeders = [], []
            for i, (topic, path) in enumerate(payloads.topic_files.items()):
                child = spawn("mosquitto_pub", [
                    "mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-V", "mqttv5", "-q", str(qos),
                    "-M", str(max_inflight), "-i", f"bench-pub-{tag}-{i}", "-t", topic, "-l",
                ], log, stdin=subprocess.PIPE)
                monitor.watch(child.name, child.pid)
                assert child.proc.stdin is not None
                feeders.append(threading.Thread(target=_feed, args=(child.proc.stdin, path.read_bytes(), repeat),
                                                daemon=True))
                children.append(child)
            for feeder in feeders:
                feeder.start()
            for child in children:
                if child.wait_exit(RUN_TIMEOUT_S) != 0:
                    raise RuntimeError(f"mosquitto_pub failed\n{child.tail()}")
            usage = monitor.stop()
        return _timed_run("mosquitto_pub", arrivals, payloads.messages * repeat, payloads.readings_per_message, usage,
                          {"processes": len(children), "repeat": repeat})


def baseline_repeats(seconds: float) -> int:
    """How many times to publish the payloads so the baseline lasts ``MIN_BASELINE_S``: a run of a few
    tens of milliseconds is at the mercy of one scheduling hiccup."""
    if seconds >= MIN_BASELINE_S:
        return 1
    return min(MAX_REPEAT, math.ceil(MIN_BASELINE_S / max(seconds, 0.01)))


def profile_generator(env: BenchEnvironment, s: GenerateBenchSettings, batch: int, qos: int, tag: str) -> str | None:
    """Run the generator once more, flat out for ``PROFILE_S``, with py-spy attached once it is connected
    (so start-up is not in the profile); the summary's path."""
    raw = env.profiles / f"generate-{tag}.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    ledger = env.state_dir / "ledgers" / f"generate-{tag}-profile.json"
    # Nobody subscribes to this run: the broker's "no matching subscribers" must count as delivered here.
    cmd = generator_command(s, batch, qos, 0, ledger, f"bench-gen-{tag}-profile") + [
        "--duration-s", str(PROFILE_S), "--no-resend-unrouted"]
    child = spawn("tsdemo generate", cmd, env.logs / f"generate-{tag}-profile.log", mqtt_env(env.mosquitto()),
                  health_port=free_port())
    try:
        child.wait_healthy(env.ready_timeout_s)
        recorder = profiles.attach(child.name, child.pid, raw, env.logs / f"generate-{tag}-py-spy.log",
                                   subprocesses=processes(s, batch) > 1)
        try:
            child.wait_exit(RUN_TIMEOUT_S)
        finally:
            summary = profiles.detach(recorder, raw, f"tsdemo generate, QoS {qos}, batch {batch}")
    finally:
        child.stop()
    return str(summary) if summary else None


def run(env: BenchEnvironment, s: GenerateBenchSettings, earlier: list[BenchResult]) -> BenchResult:
    # ``earlier`` (what the benches before this one measured) is every bench's; this one needs none of it.
    result = BenchResult("generate", {"readings": s.readings, "batches": s.batches, "qos_levels": s.qos_levels,
                                      "devices": s.devices, "sites": s.sites, "max_inflight": s.max_inflight,
                                      "repeats": s.repeats, "generator_processes": s.generator_processes})
    env.mosquitto()
    for batch in s.batches:
        payloads = env.payloads(s.devices, s.sites, batch, s.readings)
        for qos in s.qos_levels:
            n = processes(s, batch)
            tag, case = f"q{qos}-b{batch}", f"QoS {qos}, batch {batch}" + (f", {n} processes" if n > 1 else "")
            env.say(f"generate {case}: tsdemo generate against mosquitto_pub, {payloads.readings:,} readings "
                    f"in {payloads.messages:,} messages, {s.repeats} interleaved trials")
            repeat = 1

            def baseline(i: int, tag: str = tag, qos: int = qos, payloads: PayloadSet = payloads) -> Run:
                nonlocal repeat
                run = run_mosquitto_pub(env, payloads, qos, s.max_inflight, f"{tag}-t{i}", repeat)
                if (more := baseline_repeats(run.seconds)) > 1 and repeat == 1:
                    # Once: every later trial publishes the payloads as many times over.
                    repeat = more
                    run = run_mosquitto_pub(env, payloads, qos, s.max_inflight, f"{tag}-t{i}", repeat)
                return run

            def subject(i: int, tag: str = tag, qos: int = qos, batch: int = batch,
                        payloads: PayloadSet = payloads) -> Run:
                return run_generator(env, s, payloads, batch, qos, f"{tag}-t{i}")

            comparison = Comparison.of_trials("generate", case, interleave(s.repeats, subject, baseline, env.say),
                                              s.target_ratio)
            comparison.subject.details.update(qos=qos, batch=batch, processes=n)
            env.say(f"generate {case}: ratio {comparison.ratio or 0:.2f} (median of {s.repeats})")
            if profiles.wanted(s.profile, comparison.met):
                env.say(f"generate {case}: profiling the generator with py-spy")
                comparison.profile = profile_generator(env, s, batch, qos, tag)
            result.comparisons.append(comparison)
    return result
