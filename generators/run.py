"""The generator's main loop: paces readings at the target rate, batches them per site, publishes."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from generators.fleet import Device, build_fleet, sample
from generators.ledger import Ledger
from generators.publisher import WindowedPublisher
from generators.settings import GeneratorSettings
from servicekit.contract import topic_for
from servicekit.service import log_event, serve_health

log = logging.getLogger("generator")

BATCH_MAX_AGE_S = 1.0


def make_reading(device: Device, ts_ms: int, started_ms: int, rng: random.Random) -> dict[str, Any]:
    reading = {
        "device_id": device.device_id,
        "site": device.site.site_id,
        "type": device.type,
        "ts": ts_ms,
        "seq": device.seq,
        "boot": device.boot,
        "metrics": {m.name: sample(device, m, ts_ms, started_ms, rng) for m in device.metrics},
        "lat": device.lat,
        "lon": device.lon,
        "battery": round(device.battery, 2),
    }
    device.seq += 1
    device.battery = max(0.0, device.battery - 0.001)
    return reading


def run_generator(settings: GeneratorSettings, stop: threading.Event) -> int:
    """Publishes until the count or duration is reached or ``stop`` is set; returns readings acked."""
    fleet = build_fleet(settings.devices, settings.sites, settings.seed)
    ledger = Ledger(settings.ledger_path)
    for device in fleet:
        # A restarted generator is a rebooted fleet: new boot number, seq from 0, so no reading
        # id is ever reused (the pipeline would drop a reused id as a duplicate).
        prev = ledger.previous_boot(device.device_id)
        device.boot = 0 if prev is None else prev + 1
    publisher = WindowedPublisher(settings, settings.client_id, settings.qos, settings.max_inflight, ledger)

    def health() -> tuple[bool, dict]:
        return publisher.connected.is_set(), {"acked": ledger.published, "inflight": publisher.inflight()}

    server = serve_health(settings.health_port, health)
    if server is not None:
        log_event(log, "health endpoint up", port=server.server_address[1])
    publisher.start()
    rng = random.Random(settings.seed)
    started = time.monotonic()
    started_ms = int(time.time() * 1000)
    deadline = started + settings.duration_s if settings.duration_s else None
    buffers: dict[str, list[dict[str, Any]]] = {}
    buffer_born: dict[str, float] = {}
    generated = 0
    next_flush = next_report = started
    idx = 0

    def send(site: str) -> bool:
        readings = buffers.pop(site)
        buffer_born.pop(site, None)
        topic = topic_for(site, readings[0]["device_id"] if settings.batch == 1 else f"gw-{site}")
        return publisher.publish(topic, readings, stop)

    try:
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if settings.count and generated >= settings.count:
                break
            due = int(settings.rate * (now - started)) - generated
            if settings.count:
                due = min(due, settings.count - generated)
            if due <= 0:
                for site in [s for s, born in buffer_born.items() if now - born > BATCH_MAX_AGE_S]:
                    send(site)
                time.sleep(min(0.01, 1.0 / settings.rate))
            for _ in range(min(due, 5000)):
                device = fleet[idx % len(fleet)]
                idx += 1
                ts_ms = int(time.time() * 1000)
                site = device.site.site_id
                buffers.setdefault(site, []).append(make_reading(device, ts_ms, started_ms, rng))
                buffer_born.setdefault(site, now)
                generated += 1
                if len(buffers[site]) >= settings.batch and not send(site):
                    break
            if now >= next_flush:
                ledger.flush()
                next_flush = now + settings.ledger_flush_s
            if now >= next_report:
                elapsed = max(now - started, 1e-9)
                log_event(
                    log, "progress", generated=generated, acked=ledger.published,
                    rate=round(ledger.published / elapsed, 1), inflight=publisher.inflight(),
                )
                next_report = now + 5.0
        for site in list(buffers):
            send(site)
        if not publisher.drain(settings.drain_timeout_s):
            log.error("%d messages still unacknowledged at exit; they are not in the ledger", publisher.inflight())
        ledger.complete = True
        ledger.flush()
        log_event(log, "generator finished", generated=generated, acked=ledger.published)
        return ledger.published
    finally:
        publisher.close()
        if server is not None:
            server.shutdown()
