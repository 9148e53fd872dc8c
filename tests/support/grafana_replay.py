"""A fake Grafana replaying recorded API exchanges (tests/fixtures/grafana/): no Grafana server can run here,
so a local HTTP server answers the recorded answers in order and notes any request that differs from the
recording (method, path, auth header or JSON body)."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from dashboards import provisioning

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "grafana"
AUTH = "Basic " + base64.b64encode(b"admin:s3cret").decode()


def _generated(ref: str) -> Any:
    kind, _, uid = ref.partition(":")
    if kind == "dashboard":
        return provisioning.dashboards()[uid]
    group = provisioning.rule_group()
    if kind == "group":
        return group
    return next(rule for rule in group["rules"] if rule["uid"] == uid)


def expand(value: Any) -> Any:
    """Replaces ``{"$generated": ref, ...}`` with the generated object, the other keys laid over it."""
    if isinstance(value, dict):
        if "$generated" in value:
            base = json.loads(json.dumps(_generated(value["$generated"])))
            return {**base, **{k: expand(v) for k, v in value.items() if k != "$generated"}}
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    return value


class Replay:
    """A fake Grafana answering a recorded conversation; ``mismatches`` lists every deviation."""

    def __init__(self, name: str, auth: str = AUTH) -> None:
        self.auth = auth
        recording = json.loads((FIXTURES / f"{name}.json").read_text())
        self.exchanges = [expand(e) for e in recording["exchanges"]]
        self.received: list[dict[str, Any]] = []
        self.mismatches: list[str] = []
        self.lock = threading.Lock()

    def answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        with self.lock:
            index = len(self.received)
            self.received.append({"method": method, "path": path, "body": body})
            if index >= len(self.exchanges):
                self.mismatches.append(f"unexpected request #{index}: {method} {path}")
                return 599, {"message": "not in the recording"}
            expected = self.exchanges[index]["request"]
            if (method, path) != (expected["method"], expected["path"]):
                self.mismatches.append(f"#{index}: got {method} {path}, recorded {expected['method']} "
                                       f"{expected['path']}")
            elif body != expected.get("body"):
                self.mismatches.append(f"#{index} {method} {path}: body differs from the recording:\n"
                                       f"  sent     {json.dumps(body, sort_keys=True)[:2000]}\n"
                                       f"  recorded {json.dumps(expected.get('body'), sort_keys=True)[:2000]}")
            if path != "/api/health" and headers.get("authorization") != self.auth:
                self.mismatches.append(f"#{index} {method} {path}: authorization {headers.get('authorization')!r}")
            response = self.exchanges[index]["response"]
            return response["status"], response.get("body")

    def check_complete(self) -> None:
        assert not self.mismatches, "\n".join(self.mismatches)
        assert len(self.received) == len(self.exchanges), (
            f"{len(self.received)} requests sent, {len(self.exchanges)} recorded; last sent: "
            f"{self.received[-1] if self.received else None}"
        )


def handler(replay: Replay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = replay.answer(self.command, self.path, headers, body)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815 (http.server's naming)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
