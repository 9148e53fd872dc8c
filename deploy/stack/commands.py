"""``tsdemo up``, ``tsdemo down`` and ``tsdemo status``: the local stack from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from deploy.services.components import PIPELINE, SERVERS, STAGE_COLLECTOR
from deploy.stack.settings import StackEndpoints, StackPlace, StackSettings, StatusSettings
from servicekit.contract.influx import STAGE_BRIDGED, STAGE_PUBLISHED, STAGE_STORED
from servicekit.contract.metrics import PROCESSING_INPUT_ROWS_PER_SECOND
from servicekit.settings import add_service_command

COMPONENTS = (*SERVERS[:3], *PIPELINE, STAGE_COLLECTOR)  # grafana only when the stack runs one


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def default_endpoints(settings: StackEndpoints) -> dict[str, str]:
    h = settings.host
    return {"mqtt": f"mqtt://{h}:{settings.mqtt_port}", "kafka": f"{h}:{settings.kafka_port}",
            "influxdb": f"http://{h}:{settings.influx_port}"}


def collect_status(settings: StackEndpoints) -> dict[str, Any]:
    """``{"components": {name: {"state", "endpoint", "pid"}}}`` for every part of the local stack."""
    from deploy.services.process import http_ok
    from deploy.stack.local import read_state

    state = read_state(settings.state_dir.resolve()) or {"components": {}}
    defaults = default_endpoints(settings)
    result: dict[str, Any] = {}
    names = COMPONENTS + (("grafana",) if "grafana" in state["components"] else ())
    for name in names:
        comp = state["components"].get(name)
        if comp is None:
            result[name] = {"state": "stopped", "endpoint": defaults.get(name, ""), "pid": None}
            continue
        pid = comp.get("pid")
        if not pid_alive(pid):
            health = "stopped"
        elif comp["kind"] == "server":
            health = "running" if port_answers(state.get("host", settings.host), comp["port"]) else "unhealthy"
        else:
            health = "running" if http_ok(comp["health_url"]) else "unhealthy"
        result[name] = {"state": health, "endpoint": comp["endpoint"], "pid": pid if health != "stopped" else None}
    return {"components": result}


def _status(settings: StatusSettings) -> int:
    status = collect_status(settings)
    if settings.json_output:
        print(json.dumps(status, indent=2))
    else:
        print(f"{'component':<12}{'state':<11}{'pid':>8}  endpoint")
        for name, c in status["components"].items():
            print(f"{name:<12}{c['state']:<11}{c['pid'] or '-':>8}  {c['endpoint']}")
    return 0 if all(c["state"] == "running" for c in status["components"].values()) else 3


# -- progress --------------------------------------------------------------------------------------
class Progress:
    """Readings/s at each stage, from the services' own counters: what the stage collector writes."""

    LABELS = {STAGE_PUBLISHED: "published", STAGE_BRIDGED: "bridged msgs", STAGE_STORED: "stored"}

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.last: dict[str, float] = {}
        self.last_t = time.monotonic()

    def line(self) -> str:
        from servicekit.scrape import ScrapeError, scrape_sum
        from storage.stages import StageCollector

        now = time.monotonic()
        urls = self.stack.pipeline.metrics_urls()  # each time: a restarted service has another port
        totals = StageCollector(urls, timeout_s=1.0).totals()
        dt = max(now - self.last_t, 1e-6)
        parts = []
        for stage, label in self.LABELS.items():
            value = totals.get(stage)
            if value is None:
                parts.append(f"{label} -")
                continue
            rate = (value - self.last.get(stage, value)) / dt
            self.last[stage] = value
            parts.append(f"{label} {rate:,.0f}/s ({value:,.0f})")
        try:
            if not urls.get("processing"):
                raise ScrapeError("the Spark job is not running")
            spark = scrape_sum(urls["processing"], {PROCESSING_INPUT_ROWS_PER_SECOND}, 1.0)
            parts.append(f"spark in {spark[PROCESSING_INPUT_ROWS_PER_SECOND]:,.0f} msgs/s")
        except ScrapeError:
            parts.append("spark -")
        self.last_t = now
        return " | ".join(parts)


# -- up / down ------------------------------------------------------------------------------------
def _up(settings: StackSettings) -> int:
    from deploy.servers import PortInUseError
    from deploy.stack.local import LocalStack

    if settings.detach:
        return _up_detached(settings)
    missing = [b for b in ("/usr/sbin/mosquitto", "/usr/bin/influxd") if not Path(b).exists()]
    if missing or not _has_java():
        print("tsdemo up: missing prerequisites: " + ", ".join(missing + ([] if _has_java() else ["java"]))
              + "\n  run `make setup` (installs mosquitto, influxdb and the Python side)", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stack = LocalStack(settings)
    try:
        stack.start()
    except PortInUseError as exc:
        print(f"tsdemo up: {exc}\n  stop what uses it, or pick another port (see `tsdemo up --help`)",
              file=sys.stderr)
        stack.stop()
        return 2
    except Exception as exc:
        print(f"tsdemo up: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    print("the stack is up; `tsdemo status` in another shell, Ctrl-C here to stop", flush=True)
    progress = Progress(stack)
    while not stop.wait(settings.progress_interval_s):
        stack.restart_dead_servers()
        stack.restart_dead_services()
        print(progress.line(), flush=True)
    stack.stop()
    return 0


def _has_java() -> bool:
    from shutil import which

    return which("java") is not None


def _up_detached(settings: StackSettings) -> int:
    from deploy.services.process import ChildError, spawn, tsdemo
    from deploy.wait import wait_until

    state_dir = settings.state_dir.resolve()
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "logs" / "stack.log"
    env = {"TSDEMO_DETACH": "false", "TSDEMO_STATE_DIR": str(state_dir)}
    args = tsdemo("up", "--no-detach")
    for name in StackSettings.model_fields:
        if name not in ("detach", "state_dir"):
            env["TSDEMO_" + name.upper()] = str(getattr(settings, name))
    supervisor = spawn("the stack", args, log_path, env, inherit_settings=True)
    print(f"starting the stack in the background (supervisor pid {supervisor.pid}, log {log_path}) ...")

    def up() -> bool:
        if not supervisor.running():
            raise ChildError(supervisor.tail(40))
        return all(c["state"] == "running" for c in collect_status(settings)["components"].values())

    try:
        wait_until(up, settings.ready_timeout_s * 6, "the stack", every=1.0)
    except ChildError as exc:
        print(f"tsdemo up: the stack failed to start:\n{exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print("tsdemo up: timed out waiting for the stack; see " + str(log_path), file=sys.stderr)
        return 1
    print("the stack is up; `tsdemo status` shows it, `tsdemo down` stops it")
    return 0


def _down(settings: StackPlace) -> int:
    from deploy.stack.local import read_state
    from deploy.wait import wait_until

    state_dir = settings.state_dir.resolve()
    state = read_state(state_dir)
    if state is None:
        print("nothing to stop: no stack is running from " + str(state_dir))
        return 0
    sup = state.get("supervisor_pid")
    if pid_alive(sup):
        os.kill(sup, signal.SIGTERM)
        print(f"stopping the stack (supervisor pid {sup}) ...")
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not pid_alive(sup), 180, "the stack's supervisor to exit", every=0.5)
    # Anything the supervisor could not stop (it was killed, say) goes now.
    for name, comp in state["components"].items():
        if pid_alive(comp.get("pid")):
            print(f"stopping leftover {name} (pid {comp['pid']})")
            os.kill(comp["pid"], signal.SIGTERM)
    (state_dir / "stack.json").unlink(missing_ok=True)
    print("stopped")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_service_command(subparsers, "up", "start the whole local stack and show live progress", StackSettings,
                        _up, description=(
                            "Start Mosquitto, Kafka (KRaft), InfluxDB, storage init, the Spark job, the bridge\n"
                            "and a generator, each once the one before is healthy; show readings/s at each\n"
                            "stage until Ctrl-C, which stops everything cleanly. --detach returns at once."))
    add_service_command(subparsers, "down", "stop a local stack started with `tsdemo up --detach`",
                        StackPlace, _down)
    add_service_command(subparsers, "status", "state and endpoint of each part of the local stack",
                        StatusSettings, _status, description=(
                            "State (running, unhealthy, stopped), pid and endpoint of each part of the local stack;\n"
                            "--json prints {\"components\": {name: {\"state\", \"endpoint\", \"pid\"}}}. Exits 3\n"
                            "unless every part is running."))
