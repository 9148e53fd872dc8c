"""When each published message came out of the broker: a ``mosquitto_sub`` on the fleet's topics
stamps every arrival (``%U``, ns), so a publisher's rate is judged the same way for the generator and
for ``mosquitto_pub``: messages over the time from the first to the last arrival. Start-up, connects
and a tool's wait before exiting fall outside that window for both alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from deploy.services.process import Process, run_tool, spawn
from servicekit.contract import TOPIC_FILTER, topic_for

#: Published until the subscriber shows it, so no measured message goes out before it listens.
PROBE_TOPIC = topic_for("_bench", "ready")


@dataclass(frozen=True)
class Window:
    messages: int
    first: float
    last: float

    @property
    def seconds(self) -> float:
        return self.last - self.first


def arrival_window(lines: list[str], ignore_topic: str = PROBE_TOPIC) -> Window | None:
    """From ``<unix time> <topic>`` lines: how many messages arrived, first and last time; None if none."""
    stamps = []
    for line in lines:
        stamp, _, topic = line.partition(" ")
        if topic.strip() == ignore_topic or not stamp:
            continue
        stamps.append(float(stamp))
    if not stamps:
        return None
    return Window(len(stamps), min(stamps), max(stamps))


class Arrivals:
    def __init__(self, host: str, port: int, out: Path, log: Path) -> None:
        self.host, self.port, self.out, self.log = host, port, out, log
        self._child: Process | None = None

    def __enter__(self) -> Arrivals:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.out, "wb")  # noqa: SIM115 (the child writes it; closed once it exits)
        try:
            self._child = spawn("mosquitto_sub", [
                "mosquitto_sub", "-h", self.host, "-p", str(self.port), "-V", "mqttv5", "-q", "0",
                "-t", TOPIC_FILTER, "-F", "%U %t",
            ], self.log, stdout=handle)
        finally:
            handle.close()
        deadline = time.monotonic() + 30
        while PROBE_TOPIC not in self.out.read_text(errors="replace"):
            if time.monotonic() > deadline or not self._child.running():
                raise RuntimeError(f"the arrival subscriber did not start listening\n{self._child.tail()}")
            run_tool("mosquitto_pub", ["mosquitto_pub", "-h", self.host, "-p", str(self.port), "-q", "1",
                                       "-t", PROBE_TOPIC, "-m", "ready"], self.log)
            time.sleep(0.2)
        return self

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines()

    def wait_for(self, messages: int, timeout_s: float) -> Window | None:
        """Wait until ``messages`` arrived (or ``timeout_s`` passed); the arrival window so far."""
        deadline = time.monotonic() + timeout_s
        while True:
            window = arrival_window(self.lines())
            if (window is not None and window.messages >= messages) or time.monotonic() > deadline:
                return window
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self._child is not None:
            self._child.stop(5)
