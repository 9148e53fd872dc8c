"""Service plumbing shared by the long-running services: JSON logs, a health and metrics HTTP
endpoint, and a stop event set by SIGTERM or SIGINT so each service can flush, commit and exit.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": record.name.split(".")[0],
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries are chatty at INFO about every reconnect; their warnings still show.
    for noisy in ("kafka", "py4j", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_event(logger: logging.Logger, msg: str, **fields: object) -> None:
    logger.info(msg, extra={"fields": fields})


HealthCheck = Callable[[], tuple[bool, dict]]
#: a POST endpoint's work: the HTTP status and a JSON body
Action = Callable[[], tuple[int, dict]]


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def serve_health(port: int, health: HealthCheck, host: str = "0.0.0.0",
                 actions: Mapping[str, Action] | None = None) -> ThreadingHTTPServer | None:
    """``/healthz`` answers 200 or 503 with a JSON body; ``/metrics`` is Prometheus text.

    ``actions`` are POST endpoints (path -> work) that change the service, such as the bridge's ``/retire``:
    they answer only clients on loopback (the pod or host itself), 403 to anyone else, since the port also
    serves probes and scrapes from the network.

    Port 0 picks a free port (read it from ``server.server_address``); a negative port disables it.
    """
    if port < 0:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            action = (actions or {}).get(self.path.split("?")[0])
            if action is None:
                code, detail = 404, {"error": "not found"}
            elif not _loopback(self.client_address[0]):
                code, detail = 403, {"error": "only from loopback"}
            else:
                code, detail = action()
            body = json.dumps(detail).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.startswith("/metrics"):
                body, ctype, code = generate_latest(), CONTENT_TYPE_LATEST, 200
            elif self.path.startswith("/healthz"):
                ok, detail = health()
                body = json.dumps({"status": "ok" if ok else "unhealthy", **detail}).encode()
                ctype, code = "application/json", 200 if ok else 503
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def stop_on_signals() -> threading.Event:
    """An event set on SIGTERM or SIGINT; services poll it and shut down cleanly."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        logging.getLogger("servicekit").info("signal %s received, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def long_running(target: str) -> Callable[[Any], int]:
    """The ``run`` of a long-running service's command: logging set up, SIGTERM and SIGINT wired to a stop
    event, then ``"module:function"`` called with the settings and the event. The module is imported only
    when the command runs, so ``tsdemo --help`` in an image stays light."""

    def run(settings: Any) -> int:
        import importlib

        module, _, name = target.partition(":")
        setup_logging(settings.log_level)
        return int(getattr(importlib.import_module(module), name)(settings, stop_on_signals()) or 0)

    return run
