"""``tsdemo dashboards provision`` against recorded Grafana API exchanges (tests/fixtures/grafana/).

No Grafana server can run here: a local HTTP server replays the recorded answers in order and fails
on any request that differs from the recording (method, path, auth header or JSON body).
"""

from __future__ import annotations

import argparse
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dashboards import cli, provisioning
from dashboards.grafana_api import ProvisionError, provision
from dashboards.settings import GrafanaSettings
from deploy.servers import free_port

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


def _handler(replay: Replay) -> type[BaseHTTPRequestHandler]:
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


@pytest.fixture
def grafana(request) -> Iterator[tuple[Replay, str]]:
    name, _, token = request.param.partition("+token:")
    replay = Replay(name, f"Bearer {token}") if token else Replay(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(replay))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield replay, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _settings(url: str, **extra: Any) -> GrafanaSettings:
    given = {"grafana_url": url, "grafana_user": "admin", "grafana_password": "s3cret", "grafana_wait_s": 10,
             "influx_url": "http://influxdb:8086", "influx_database": "iot"}
    return GrafanaSettings(**{**given, **extra})


def _writes(replay: Replay) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in replay.received if r["method"] != "GET"]


@pytest.mark.parametrize("grafana", ["fresh"], indirect=True)
def test_first_run_waits_for_health_then_creates_everything(grafana):
    replay, url = grafana
    said: list[str] = []
    actions = provision(_settings(url), say=said.append)
    replay.check_complete()
    assert any(line.startswith("waiting for Grafana") for line in said)
    assert _writes(replay) == [
        "POST /api/datasources", "POST /api/folders", "POST /api/dashboards/db", "POST /api/dashboards/db",
        "POST /api/dashboards/db", "POST /api/v1/provisioning/alert-rules", "POST /api/v1/provisioning/alert-rules",
        "POST /api/v1/provisioning/alert-rules",
    ]
    assert actions[0] == "created datasource tsdemo-influxdb -> http://influxdb:8086 (database iot)"


@pytest.mark.parametrize("grafana", ["up_to_date"], indirect=True)
def test_second_run_reads_and_writes_nothing(grafana):
    replay, url = grafana
    actions = provision(_settings(url), say=lambda _line: None)
    replay.check_complete()
    assert _writes(replay) == []
    assert all(a.endswith("is up to date") for a in actions), actions


@pytest.mark.parametrize("grafana", ["drifted"], indirect=True)
def test_changed_objects_are_updated_and_only_those(grafana):
    replay, url = grafana
    provision(_settings(url), say=lambda _line: None)
    replay.check_complete()
    assert _writes(replay) == [
        "PUT /api/datasources/uid/tsdemo-influxdb", "PUT /api/folders/tsdemo", "POST /api/dashboards/db",
        "POST /api/dashboards/db", "PUT /api/v1/provisioning/alert-rules/tsdemo-freshness",
        "POST /api/v1/provisioning/alert-rules", "PUT /api/v1/provisioning/folder/tsdemo/rule-groups/tsdemo",
    ]


@pytest.mark.parametrize("grafana", ["bad_credentials"], indirect=True)
def test_bad_credentials_stop_with_a_clear_error(grafana, capsys):
    replay, url = grafana
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["dashboards", "provision", "--grafana-url", url, "--grafana-password", "s3cret",
                              "--influx-url", "http://influxdb:8086"])
    assert args.func(args) == 1
    replay.check_complete()
    err = capsys.readouterr().err
    assert f"Grafana at {url} refused the credentials (HTTP 401)" in err
    assert "--grafana-user/--grafana-password" in err and "TSDEMO_GRAFANA_PASSWORD" in err


@pytest.mark.parametrize("grafana", ["file_provisioned"], indirect=True)
def test_objects_from_provisioning_files_are_left_to_them(grafana):
    replay, url = grafana
    actions = provision(_settings(url), say=lambda _line: None)
    replay.check_complete()
    assert _writes(replay) == []
    assert sum("comes from provisioning files" in a for a in actions) == 1 + 3 + 3, actions


def test_an_unreachable_grafana_fails_after_the_wait_naming_url_and_flag():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ProvisionError) as failure:
        provision(_settings(url, grafana_wait_s=1.5), say=lambda _line: None)
    message = str(failure.value)
    assert url in message and "1.5s" in message and "--grafana-url" in message


@pytest.mark.parametrize("grafana", ["bad_credentials+token:glsa_0123"], indirect=True)
def test_a_token_is_sent_as_bearer_and_named_when_refused(grafana):
    replay, url = grafana
    with pytest.raises(ProvisionError, match=r"refused the credentials .*--grafana-token \(TSDEMO_GRAFANA_TOKEN\)"):
        provision(_settings(url, grafana_token="glsa_0123"), say=lambda _line: None)
    replay.check_complete()  # includes the Authorization: Bearer header on /api/org


def test_a_url_prefix_keeps_its_path():
    from dashboards.grafana_api import connect

    api = connect(GrafanaSettings(grafana_url="https://example.com/grafana/"))
    assert api.client.url == "https://example.com/grafana/api"
    assert connect(GrafanaSettings(grafana_url="http://127.0.0.1:3000")).client.url == "http://127.0.0.1:3000/api"


@pytest.mark.parametrize(("given", "message"), [
    ({"grafana_url": "grafana:3000"}, "grafana_url must look like"),
    ({"grafana_url": "http://admin:pw@grafana:3000"}, "must not carry"),
    ({"influx_url": "http://influxdb:99999"}, "influx_url has an invalid port"),
    ({"influx_password": "pw"}, "influx_password is set but influx_username is not"),
])
def test_bad_settings_are_refused_with_the_reason(given, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        GrafanaSettings(**given)


def test_the_settings_read_the_same_influx_variables_as_the_provisioning_file(monkeypatch):
    monkeypatch.setenv("TSDEMO_INFLUX_URL", "http://influxdb:8086/")
    monkeypatch.setenv("TSDEMO_INFLUX_DATABASE", "iot_test")
    monkeypatch.setenv("TSDEMO_GRAFANA_TOKEN", "glsa_x")
    settings = GrafanaSettings()
    assert (settings.influx_url, settings.influx_database) == ("http://influxdb:8086", "iot_test")
    assert settings.credential() == "glsa_x"
