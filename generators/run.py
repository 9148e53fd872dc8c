"""The generator's main loop: paces readings at the target rate, batches them, publishes, accounts.

``run()`` is the entry point for the command and for benchmarks: it runs until the count, the
duration or the replay file is done (or ``stop`` is set) and returns a ``RunReport`` with the rate
achieved on the generator's own monotonic clock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from generators.accounting import Accountant
from generators.faults import FaultConfig
from generators.fleet import Fleet, build_fleet
from generators.labels import LabelWriter
from generators.ledger import Ledger
from generators.outgoing import Batcher, Item, Message
from generators.pacing import IDLE_S, RateMeter, RatePacer, RateReport
from generators.publisher import READINGS_ACKED, WindowedPublisher
from generators.replay import FileTimingPacer, ReplaySource
from generators.settings import GeneratorSettings
from generators.stream import ReadingStream, Source
from servicekit.service import log_event, serve_health

log = logging.getLogger("generator")

#: Readings generated per pass of the loop at most, so flushes, batch ages and stop stay responsive.
MAX_PER_PASS = 5000
#: A large ledger's rewrite may take at most 1/FLUSH_SHARE of the run's time.
FLUSH_SHARE = 20
PROGRESS_S = 5.0

#: (k, n): a worker's part of the fleet, the sites whose number is k modulo n.
Share = tuple[int, int]


class BootSource(Protocol):
    def previous_boot(self, device_id: str) -> int | None: ...


@dataclass(frozen=True)
class RunReport:
    """What a run did. ``rate`` is judged on readings generated (what the pacer controls);
    ``acked_rate`` is what the broker took, from the start to the last acknowledgement."""

    rate: RateReport
    generated: int
    messages_sent: int
    messages_acked: int
    readings_acked: int
    unacknowledged: int
    acked_elapsed_s: float

    @property
    def acked_rate(self) -> float:
        return self.readings_acked / self.acked_elapsed_s if self.acked_elapsed_s > 0 else 0.0


def make_ledger(settings: GeneratorSettings, path: Path | None) -> Ledger:
    return Ledger(path, late_threshold_ms=int(settings.late_threshold_s * 1000),
                  detail_ms=int(settings.ledger_detail_s * 1000))


def make_labels(settings: GeneratorSettings, path: Path | None) -> LabelWriter:
    return LabelWriter(path if settings.anomaly_rate > 0 and settings.replay_path is None else None)


def write_manifest(fleet: Fleet, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(d, separators=(",", ":")) + "\n" for d in fleet.manifest())


def make_source(settings: GeneratorSettings, ledger: BootSource, started_ms: int, share: Share | None = None,
                ) -> Source:
    """The fleet's reading stream, or the replay; device boots continue from the ledger. With ``share``
    (k, n), only the sites whose number is k modulo n (a worker process's part of the fleet)."""
    if settings.replay_path is not None:
        return ReplaySource(settings.replay_path, started_ms, ledger.previous_boot,
                            stamp_now=settings.replay_timing == "rate")
    fleet = build_fleet(settings.devices, settings.sites, settings.seed, settings.device_prefix)
    seed = settings.seed
    if share is not None:
        fleet = fleet.part(*share)
        # Each part its own random streams: the same seed would give every part the same noise.
        seed = settings.seed + share[0]
    for device in fleet:
        # A restarted generator is a rebooted fleet: new boot number, seq from 0, so no reading
        # id is ever reused (the pipeline would drop a reused id as a duplicate).
        prev = ledger.previous_boot(device.device_id)
        device.boot = 0 if prev is None else prev + 1
    write_manifest(fleet, settings.fleet_manifest_path)
    return ReadingStream(fleet, FaultConfig.from_settings(settings), seed, started_ms)


def run(settings: GeneratorSettings, stop: threading.Event | None = None, *, share: Share | None = None,
        ledger: Ledger | None = None, labels: LabelWriter | None = None,
        started: Callable[[], None] | None = None) -> RunReport:
    """Publishes until the count, duration or replay file is done, or ``stop`` is set. With
    ``--processes`` above 1, worker processes publish (``generators.workers``) and this one keeps the
    ledger; a worker runs this with its ``share`` of the sites and a ledger that ships its counts, and
    ``started`` (called once the client runs, before the first reading) holds it until every worker is."""
    stop = stop or threading.Event()
    if settings.processes > 1 and share is None:
        from generators.workers import run_workers

        return run_workers(settings, stop)
    ledger = ledger or make_ledger(settings, settings.ledger_path)
    labels = labels or make_labels(settings, settings.labels_path)
    accountant = Accountant(ledger, labels)
    acked = {"readings": 0, "messages": 0, "last": 0.0}

    acked_lock = threading.Lock()

    def on_acked(messages: list[Message]) -> None:
        # Called on the network thread, and on ours for a PUBACK that overtook publish_batch.
        readings = accountant.acked(messages)
        READINGS_ACKED.inc(readings)
        with acked_lock:
            acked["readings"] += readings
            acked["messages"] += len(messages)
            acked["last"] = time.monotonic()

    source = make_source(settings, ledger, int(time.time() * 1000), share)
    fleet_at_once = isinstance(source, ReadingStream) and source.vectorised
    publisher = WindowedPublisher(settings, settings.client_id, settings.qos, settings.max_inflight, on_acked,
                                  resend_window_s=settings.resend_window_s,
                                  resend_unrouted=settings.resend_unrouted)
    batcher = Batcher(settings.batch, int(settings.late_threshold_s * 1000))

    def health() -> tuple[bool, dict]:
        return publisher.connected.is_set(), {"acked": ledger.published, "inflight": publisher.inflight()}

    server = serve_health(settings.health_port, health)
    if server is not None:
        log_event(log, "health endpoint up", port=server.server_address[1])
    publisher.start()
    if started is not None:
        started()
    sent = 0

    def send(messages: list[Message], until: threading.Event) -> bool:
        nonlocal sent
        if not messages:
            return True
        accountant.sent(messages)
        went = publisher.publish_batch(messages, until)
        sent += went
        return went == len(messages)

    def collect(items: list[Item], out: list[Message]) -> None:
        if any(i.dropped for i in items):
            accountant.dropped(items)
        out.extend(batcher.add(items))

    def emit(items: list[Item], until: threading.Event) -> bool:
        out: list[Message] = []
        collect(items, out)
        return send(out, until)

    start = time.monotonic()
    if isinstance(source, ReplaySource) and settings.replay_timing == "original":
        pacer: RatePacer | FileTimingPacer = FileTimingPacer(source, start)
        meter = RateMeter(start, None)
    else:
        pacer = RatePacer(settings.rate, start)
        meter = RateMeter(start, settings.rate)
    deadline = start + settings.duration_s if settings.duration_s else None
    next_flush = next_report = start
    last_generated = start
    exhausted = False
    try:
        while not stop.is_set() and not exhausted:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if settings.count and source.generated >= settings.count:
                break
            due = pacer.due(now)
            if settings.count:
                due = min(due, settings.count - source.generated)
            if due <= 0:
                send(batcher.due(), stop)
                time.sleep(IDLE_S)
            # A pass's messages go to the publisher together: one hand-over to the network thread per
            # pass (or per window's worth), not one per message.
            out = batcher.due()
            if fleet_at_once and due > 0:
                # A fault-free fleet: the pass's readings drawn with numpy in one call.
                n = min(due, MAX_PER_PASS)
                out.extend(batcher.add_plain(source.next_many(int(time.time() * 1000), n)))  # type: ignore[attr-defined]
                pacer.took(n)
            for _ in range(0 if fleet_at_once else min(due, MAX_PER_PASS)):
                items = source.next(int(time.time() * 1000))
                if items is None:
                    exhausted = True
                    break
                pacer.took(1)
                if items:
                    collect(items, out)
            if out and not send(out, stop):
                break
            if due > 0:
                last_generated = time.monotonic()
            meter.tick(now, source.generated)
            if now >= next_flush:
                flush_started = time.monotonic()
                ledger.flush()
                labels.flush()
                took = time.monotonic() - flush_started
                next_flush = now + max(settings.ledger_flush_s, FLUSH_SHARE * took)
            if now >= next_report:
                log_event(
                    log, "progress", generated=source.generated, acked=ledger.published,
                    rate=round(source.generated / max(now - start, 1e-9), 1), inflight=publisher.inflight(),
                )
                next_report = now + PROGRESS_S
        rate = meter.report(last_generated, source.generated)
        # Whatever is held back goes out now (offline devices come back); past the drain timeout we
        # stop waiting for window space, and what did not go is not in the ledger.
        final = threading.Event()
        timer = threading.Timer(settings.drain_timeout_s, final.set)
        timer.start()
        try:
            emit(source.drain(), final)
            send(batcher.flush(), final)
            if not publisher.drain(settings.drain_timeout_s):
                log.error("%d messages still unacknowledged at exit; they are not in the ledger",
                          publisher.inflight())
        finally:
            timer.cancel()
        ledger.unacknowledged = publisher.unacknowledged_readings()
        ledger.complete = True
        ledger.flush()
        log_event(log, "generator finished", generated=source.generated, acked=ledger.published,
                  rate=round(rate.achieved, 1), worst_minute=rate.worst_window)
        return RunReport(
            rate=rate, generated=source.generated, messages_sent=sent, messages_acked=acked["messages"],
            readings_acked=acked["readings"], unacknowledged=ledger.unacknowledged,
            acked_elapsed_s=max(acked["last"] - start, 0.0),
        )
    finally:
        publisher.close()
        labels.close()
        if server is not None:
            server.shutdown()

