"""``tsdemo generate --processes N``: the fleet published by N worker processes, one ledger kept here.

One Python process draws, encodes and accounts every reading under one GIL: at batch 10 that bound
the generator near a core (``mosquitto_pub``, the benchmark's baseline, runs a process per site). Here
each worker runs the ordinary publishing loop (``generators.run.run``) on its share of the sites, with
its own MQTT connection and client id. This process keeps the only ledger and labels file: a worker's
``ShippingLedger`` sends what it counted (grouped by device, boot and minute, not reading by reading)
at each of its ledger flushes, and the acknowledgement rule is unchanged: a reading is counted once the
broker acknowledged it, in the worker that sent it.

A worker stops when this process asks (SIGTERM or SIGINT here, or the count or duration done) or when
this process is gone (a kill -9 here: nobody is left to count for). A worker that dies stops the
others; the run then reports its readings as not all accounted for.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import REGISTRY

from generators.fleet import build_fleet
from generators.ledger import BootKey, CountKey, Ledger
from generators.pacing import RateReport
from generators.publisher import (
    ACKED_MESSAGES,
    INFLIGHT,
    READINGS_ACKED,
    REFUSED,
    RESENT,
    SENT,
    UNROUTED,
)
from generators.run import PROGRESS_S, RunReport, make_labels, make_ledger, run, write_manifest
from generators.settings import GeneratorSettings
from servicekit.contract import metrics as m
from servicekit.service import log_event, serve_health, setup_logging

log = logging.getLogger("generator")

#: The worker's counters this process adds up and exports as its own.
SHIPPED_COUNTERS = {
    m.GENERATOR_MESSAGES_SENT: SENT, m.GENERATOR_MESSAGES_ACKED: ACKED_MESSAGES,
    m.GENERATOR_MESSAGES_REFUSED: REFUSED, m.GENERATOR_MESSAGES_RESENT: RESENT,
    m.GENERATOR_MESSAGES_UNROUTED: UNROUTED,
}
#: How often a worker looks whether it was asked to stop or this process is gone.
WATCH_S = 0.2


@dataclass
class Shipment:
    """What a worker counted since its last flush (and its counters so far)."""

    part: int
    boots: set[BootKey]
    counts: Counter[CountKey]
    malformed: int
    duplicates: int
    messages: int
    labels: list[dict[str, Any]]
    counters: dict[str, float]
    inflight: float


class ShippingLedger:
    """A worker's ledger: the count and boot keys the ``Accountant`` gives it are kept and sent to the
    main process at each flush; boots come from the main process's ledger."""

    def __init__(self, part: int, boots: dict[str, int], out: Any) -> None:
        self.part = part
        self._boots = boots
        self._out = out
        self._lock = threading.Lock()
        self._clear()
        self.published = 0
        self.unacknowledged = 0
        self.complete = False
        self.labels = _ShippedLabels(self)

    def _clear(self) -> None:
        self._boot_keys: set[BootKey] = set()
        self._counts: Counter[CountKey] = Counter()
        self._extra = [0, 0, 0]
        self._labels: list[dict[str, Any]] = []

    def previous_boot(self, device_id: str) -> int | None:
        return self._boots.get(device_id)

    def note_boots(self, keys: set[BootKey]) -> None:
        with self._lock:
            self._boot_keys |= keys

    def add_counts(self, counts: Counter[CountKey]) -> None:
        with self._lock:
            self._counts.update(counts)
            self.published += sum(counts.values())

    def count_extra(self, *, malformed: int = 0, duplicates: int = 0, messages: int = 0) -> None:
        with self._lock:
            self._extra[0] += malformed
            self._extra[1] += duplicates
            self._extra[2] += messages

    def flush(self) -> None:
        counters = {name: REGISTRY.get_sample_value(name) or 0.0 for name in SHIPPED_COUNTERS}
        inflight = REGISTRY.get_sample_value(m.GENERATOR_MESSAGES_INFLIGHT) or 0.0
        with self._lock:
            shipment = Shipment(self.part, self._boot_keys, self._counts, *self._extra, self._labels, counters,
                                inflight)
            self._clear()
        self._out.put(("counts", self.part, shipment))


class _ShippedLabels:
    """The worker's labels, shipped with its counts (the labels file is the main process's)."""

    def __init__(self, ledger: ShippingLedger) -> None:
        self._ledger = ledger

    def write(self, labels: list[dict[str, Any]]) -> None:
        with self._ledger._lock:
            self._ledger._labels.extend(labels)

    def flush(self) -> None:
        """Labels go with the ledger's flush."""

    def close(self) -> None:
        """Nothing of its own to close."""


def shares(total: float, weights: list[int]) -> list[float]:
    """``total`` split in proportion to ``weights``."""
    whole = sum(weights)
    return [total * w / whole for w in weights]


def whole_shares(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` in whole numbers that add up to it (largest remainders)."""
    exact = shares(total, weights)
    out = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: out[i] - exact[i])[: total - sum(out)]:
        out[i] += 1
    return out


def _worker(settings: GeneratorSettings, part: int, parts: int, boots: dict[str, int], out: Any,
            halt: Connection, go: Connection) -> None:
    setup_logging(settings.log_level)
    stop = threading.Event()
    # Ctrl-C reaches the whole process group; the main process decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch() -> None:
        # The main process closes its end to halt the workers, and so does its death (kill -9): either
        # way the pipe reads as ready. (A multiprocessing Event would not do: a worker that exits while
        # waiting on it leaves the next set() blocked for ever.)
        while not stop.is_set():
            if halt.poll(WATCH_S):
                stop.set()

    threading.Thread(target=watch, name="watch", daemon=True).start()
    ledger = ShippingLedger(part, boots, out)

    def started() -> None:
        # Workers start publishing together, once each has imported and started its client (a second or
        # so after spawn): otherwise the first would run alone at the start of a short run.
        out.put(("started", part, None))
        while not stop.is_set() and not go.poll(WATCH_S):
            pass

    report = run(settings, stop, share=(part, parts), ledger=ledger, labels=ledger.labels,  # type: ignore[arg-type]
                 started=started)
    out.put(("report", part, report))


def _apply(ledger: Ledger, labels: Any, s: Shipment, last: dict[int, dict[str, float]]) -> None:
    ledger.note_boots(s.boots)
    ledger.add_counts(s.counts)
    ledger.count_extra(malformed=s.malformed, duplicates=s.duplicates, messages=s.messages)
    labels.write(s.labels)
    READINGS_ACKED.inc(sum(s.counts.values()))
    before = last.setdefault(s.part, {})
    for name, value in s.counters.items():
        SHIPPED_COUNTERS[name].inc(max(0.0, value - before.get(name, 0.0)))
        before[name] = value
    before["inflight"] = s.inflight
    INFLIGHT.set(sum(v.get("inflight", 0.0) for v in last.values()))


def _combined(settings: GeneratorSettings, reports: list[RunReport], started: float) -> RunReport:
    count = sum(r.rate.count for r in reports)
    worst = [r.rate.worst_window for r in reports]
    best = [r.rate.best_window for r in reports]
    rate = RateReport(
        target=settings.rate, count=count, elapsed_s=max((r.rate.elapsed_s for r in reports), default=0.0),
        window_s=reports[0].rate.window_s if reports else 0.0,
        # Parts run side by side: the fleet's worst (best) window is at least the sum of theirs.
        worst_window=None if None in worst else sum(worst),  # type: ignore[arg-type]
        best_window=None if None in best else sum(best),  # type: ignore[arg-type]
    )
    return RunReport(
        rate=rate, generated=sum(r.generated for r in reports), messages_sent=sum(r.messages_sent for r in reports),
        messages_acked=sum(r.messages_acked for r in reports), readings_acked=sum(r.readings_acked for r in reports),
        unacknowledged=sum(r.unacknowledged for r in reports),
        acked_elapsed_s=max((r.acked_elapsed_s for r in reports), default=time.monotonic() - started),
    )


def run_workers(settings: GeneratorSettings, stop: threading.Event) -> RunReport:
    """Runs ``settings.processes`` workers until they are done or ``stop`` is set; keeps the ledger."""
    parts = settings.processes
    ledger = make_ledger(settings, settings.ledger_path)
    labels = make_labels(settings, settings.labels_path)
    fleet = build_fleet(settings.devices, settings.sites, settings.seed, settings.device_prefix)
    write_manifest(fleet, settings.fleet_manifest_path)
    pieces = [fleet.part(k, parts) for k in range(parts)]
    sizes = [len(p) for p in pieces]
    counts = whole_shares(settings.count, sizes)
    rates = shares(settings.rate, sizes)
    # spawn, not fork: this process may already run threads (the caller's, the metrics server's).
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    halt, halt_sender = ctx.Pipe(duplex=False)
    # Both pipes are signals by closing: a worker's poll() sees the main process close its end, or die.
    go, go_sender = ctx.Pipe(duplex=False)
    workers = []
    for k, piece in enumerate(pieces):
        boots = {d.device_id: b for d in piece if (b := ledger.previous_boot(d.device_id)) is not None}
        worker_settings = settings.model_copy(update={
            "processes": 1, "client_id": f"{settings.client_id}-{k}", "count": counts[k], "rate": rates[k],
            "health_port": -1, "ledger_path": None, "labels_path": None, "fleet_manifest_path": None,
        })
        workers.append(ctx.Process(target=_worker, name=f"generator-{k}", daemon=True,
                                   args=(worker_settings, k, parts, boots, out, halt, go)))

    def health() -> tuple[bool, dict]:
        alive = sum(w.is_alive() for w in workers)
        return alive == parts, {"acked": ledger.published, "processes": alive}

    server = serve_health(settings.health_port, health)
    if server is not None:
        log_event(log, "health endpoint up", port=server.server_address[1])
    started = time.monotonic()
    for w in workers:
        w.start()
    halt.close()  # the workers' copies are theirs; ours would keep the pipes open
    go.close()
    waiting = set(range(parts))

    def halt_workers() -> None:
        for sender in (halt_sender, go_sender):
            if not sender.closed:
                sender.close()
    log_event(log, "workers started", processes=parts, devices=sizes, rates=[round(r, 1) for r in rates])
    reports: dict[int, RunReport | None] = {}
    last: dict[int, dict[str, float]] = {}
    next_flush = next_report = started
    try:
        while len(reports) < parts:
            if stop.is_set():
                halt_workers()
            try:
                kind, part, body = out.get(timeout=WATCH_S)
            except queue.Empty:
                # A worker gone without its report (its queue is empty once it has exited): stop the rest.
                for k, w in enumerate(workers):
                    if k not in reports and w.exitcode is not None:
                        log.error("generator worker %d exited with %s before its report; stopping the others",
                                  k, w.exitcode)
                        reports[k] = None
                        halt_workers()
                kind = None
            if kind == "started":
                waiting.discard(part)
                if not waiting:
                    go_sender.close()
            elif kind == "counts":
                _apply(ledger, labels, body, last)
            elif kind == "report":
                reports[part] = body
            now = time.monotonic()
            if now >= next_flush:
                ledger.flush()
                labels.flush()
                next_flush = now + settings.ledger_flush_s
            if now >= next_report:
                log_event(log, "progress", acked=ledger.published, processes=sum(w.is_alive() for w in workers))
                next_report = now + PROGRESS_S
    finally:
        halt_workers()
        for w in workers:
            w.join(settings.drain_timeout_s + 30)
            if w.is_alive():
                w.kill()
        done = [r for r in reports.values() if r is not None]
        report = _combined(settings, done, started)
        ledger.unacknowledged = report.unacknowledged
        ledger.complete = len(done) == parts
        ledger.flush()
        labels.close()
        if server is not None:
            server.shutdown()
    if len(done) < parts:
        # The dead worker's acknowledged readings since its last flush are not in the ledger: say so.
        log.error("%d of %d generator workers failed; the ledger is incomplete", parts - len(done), parts)
        report = replace(report, unacknowledged=max(report.unacknowledged, 1))
    log_event(log, "generator finished", generated=report.generated, acked=ledger.published,
              rate=round(report.rate.achieved, 1), worst_minute=report.rate.worst_window, processes=parts)
    return report
