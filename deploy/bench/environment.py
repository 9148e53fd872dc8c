"""One bench run's world: the real servers on free ports in a temporary state directory (started on
first use, stopped at the end), the output directory and the rendered payloads, shared by every
sub-bench of ``tsdemo bench all``."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from deploy.bench.payloads import PayloadSet, render_payloads
from deploy.servers import (
    InfluxDB,
    Kafka,
    ManagedServer,
    Mosquitto,
    create_topics,
    free_port,
    start_servers,
    stop_servers,
)

#: Event times of rendered payloads are spaced as a fleet publishing this many readings/s: processing's
#: dedupe and window state then match a stream of that rate, whatever speed the data is read at.
EVENT_RATE = 20_000.0

S = TypeVar("S", bound=ManagedServer)


class BenchEnvironment:
    def __init__(self, out_dir: Path, keep_state: bool = False, ready_timeout_s: float = 180.0) -> None:
        self.out_dir = out_dir.resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.logs = self.out_dir / "logs"
        self.profiles = self.out_dir / "profiles"
        self.state_dir = Path(tempfile.mkdtemp(prefix="tsdemo-bench-"))
        self.keep_state = keep_state
        self.ready_timeout_s = ready_timeout_s
        self._servers: dict[str, ManagedServer] = {}
        self._started = time.monotonic()

    # -- progress ------------------------------------------------------------------------------------
    def say(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self._started:6.0f}s] {message}", file=sys.stderr, flush=True)

    # -- servers -------------------------------------------------------------------------------------
    def _server(self, name: str, make: Callable[[], S]) -> S:
        server = self._servers.get(name)
        if server is None:
            server = make()
            self._servers[name] = server
            start_servers({name: server}, self.ready_timeout_s, self.say)
        return server  # type: ignore[return-value]

    def mosquitto(self) -> Mosquitto:
        return self._server("mosquitto", lambda: Mosquitto(self.state_dir / "mosquitto", free_port()))

    def kafka(self) -> Kafka:
        return self._server("kafka", lambda: Kafka(self.state_dir / "kafka", free_port(), free_port()))

    def influxdb(self) -> InfluxDB:
        return self._server("influxdb", lambda: InfluxDB(self.state_dir / "influxdb", free_port()))

    def server_pids(self) -> dict[str, int]:
        """The running servers' pids by name, for resource watches."""
        return {name: s.pid for name, s in self._servers.items() if s.pid is not None and s.is_running()}

    def topic(self, name: str, partitions: int = 4) -> str:
        """A fresh Kafka topic (the readings topic has 4 partitions, like the stack's)."""
        create_topics(self.kafka().endpoint, {name: partitions})
        return name

    # -- payloads ------------------------------------------------------------------------------------
    def payloads(self, devices: int, sites: int, batch: int, readings: int) -> PayloadSet:
        """The same rendered payloads for every sub-bench asking for the same shape and size."""
        directory = self.state_dir / "payloads" / f"d{devices}-s{sites}-b{batch}-n{readings}"
        if not (directory / "payloads.json").exists():
            self.say(f"rendering {readings:,} readings ({devices} devices, {sites} sites, batch {batch})")
        directory.mkdir(parents=True, exist_ok=True)
        return render_payloads(devices, sites, batch, readings, directory, rate=EVENT_RATE)

    # -- end -----------------------------------------------------------------------------------------
    def close(self) -> None:
        stop_servers(self._servers, self.say)
        if self.keep_state:
            self.say(f"server state kept in {self.state_dir}")
        else:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> BenchEnvironment:
        # The servers run in sessions of their own, so a SIGTERM to the bench (``timeout``, a CI job's end, a
        # plain ``kill``) would end it without ``__exit__`` and leave Kafka, InfluxDB and Mosquitto running.
        # As SystemExit it unwinds like Ctrl-C does, through ``close``.
        self._previous_sigterm = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
