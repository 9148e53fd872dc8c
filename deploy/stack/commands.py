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

from deploy.services.components import PIPELINE, SERVERS
from deploy.stack.settings import StackSettings
from servicekit.settings import add_service_command

COMPONENTS = (*SERVERS[:3], *PIPELINE)  # grafana only when the stack runs one


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


def default_endpoints(settings: StackSettings) -> dict[str, str]:
    h = settings.host
    return {"mqtt": f"mqtt://{h}:{settings.mqtt_port}", "kafka": f"{h}:{settings.kafka_port}",
            "influxdb": f"http://{h}:{settings.influx_port}"}


def collect_status(settings: StackSettings) -> dict[str, Any]:
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


def _status(settings: StackSettings, as_json: bool) -> int:
    status = collect_status(settings)
    if as_json:
        print(json.dumps(status, indent=2))
    else:
        print(f"{'component':<12}{'state':<11}{'pid':>8}  endpoint")
        for name, c in status["components"].items():
            print(f"{name:<12}{c['state']:<11}{c['pid'] or '-':>8}  {c['endpoint']}")
    return 0 if all(c["state"] == "running" for c in status["components"].values()) else 3


# -- progress --------------------------------------------------------------------------------------
def _metric(url: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    from deploy.services.process import http_get, metric_value

    try:
        return metric_value(http_get(url, timeout=1.0)[1].decode(), name, labels)
    except OSError:
        return None


class Progress:
    """Readings/s at each stage, from each service's metrics and InfluxDB's stored counts."""

    def __init__(self, stack: Any) -> None:
        from storage.queries import InfluxQuery
        from storage.settings import InfluxSettings
        from storage.writer import InfluxWriter

        self.stack = stack
        settings = InfluxSettings(influx_url=stack.service_env()["TSDEMO_INFLUX_URL"], influx_retry_max_s=2)
        self.influx = InfluxQuery(settings)
        self.writer = InfluxWriter(settings)
        self.last: dict[str, float] = {}
        self.last_t = time.monotonic()

    def _counters(self) -> dict[str, float | None]:
        svc = self.stack.services
        base = {name: s.health_url.rsplit("/", 1)[0] + "/metrics" for name, s in svc.items()}
        stored = None
        try:
            rows = self.influx.query('SELECT sum("count") AS n FROM "device_window" WHERE time > now() - 1h')
            stored = float(rows[0]["n"]) if rows else 0.0
        except Exception:  # progress is best effort; a hiccup must not stop the stack
            stored = None
        counters = {
            "published": _metric(base["generator"], "tsdemo_generator_readings_acked_total"),
            "bridged msgs": _metric(base["ingest"], "tsdemo_ingest_forwarded_total"),
            "stored samples": stored,
        }
        self._record_stages(counters, _metric(base["ingest"], "tsdemo_ingest_rejected_total"))
        return counters

    def _record_stages(self, counters: dict[str, float | None], rejected: float | None) -> None:
        """The stage counters into measurement ``stage`` (the pipeline dashboard's published-vs-stored)."""
        now = int(time.time() * 1000)
        totals = {"published": counters["published"], "bridged": counters["bridged msgs"], "rejected": rejected}
        points = [{"measurement": "stage", "tags": {"stage": stage}, "fields": {"total": float(total)}, "time": now}
                  for stage, total in totals.items() if total is not None]
        try:
            self.writer.write(points)
        except Exception:  # progress is best effort; InfluxDB being down must not stop the stack
            pass

    def line(self) -> str:
        now = time.monotonic()
        counters = self._counters()
        dt = max(now - self.last_t, 1e-6)
        parts = []
        for name, value in counters.items():
            if value is None:
                parts.append(f"{name} -")
                continue
            rate = (value - self.last.get(name, value)) / dt
            self.last[name] = value
            parts.append(f"{name} {rate:,.0f}/s ({value:,.0f})")
        spark = _metric(self.stack.services["processing"].health_url.rsplit("/", 1)[0] + "/metrics",
                        "tsdemo_processing_input_rows_per_second", {"query": "windows"})
        parts.append(f"spark in {spark:,.0f} msgs/s" if spark is not None else "spark -")
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


def _down(settings: StackSettings) -> int:
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


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    add_service_command(subparsers, "up", "start the whole local stack and show live progress", StackSettings,
                        _up, description=(
                            "Start Mosquitto, Kafka (KRaft), InfluxDB, storage init, the Spark job, the bridge\n"
                            "and a generator, each once the one before is healthy; show readings/s at each\n"
                            "stage until Ctrl-C, which stops everything cleanly. --detach returns at once."))
    add_service_command(subparsers, "down", "stop a local stack started with `tsdemo up --detach`",
                        StackSettings, _down)
    status = add_service_command(subparsers, "status", "state and endpoint of each part of the local stack",
                                 StackSettings, lambda s: None)
    status.add_argument("--json", action="store_true", help="print {\"components\": {...}} as JSON")
    status.set_defaults(func=lambda args: _status(_settings(args), args.json))


def _settings(args: argparse.Namespace) -> StackSettings:
    from servicekit.settings import settings_from_args

    return settings_from_args(StackSettings, args)
