"""Dashboards as code: the committed provisioning tree is what the code generates and the deployments mount
exactly it; ``tsdemo dashboards provision`` against recorded Grafana API exchanges (tests/support/grafana_replay.py:
a local server replays the recorded answers and fails on any request that differs from the recording)."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import cli, provisioning
from dashboards.conventions import FOLDER_TITLE
from dashboards.grafana_api import ProvisionError, provision
from dashboards.settings import COMMITTED, GrafanaSettings
from deploy.servers import free_port
from tests.support.grafana_replay import Replay, handler

REPO = Path(__file__).resolve().parents[3]
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["dashboards", *argv])
    return args.func(args)


def test_the_committed_tree_is_what_the_code_generates():
    stale = provisioning.stale(COMMITTED)
    assert stale == [], f"run `tsdemo dashboards generate`: {stale}"


def test_the_tree_has_grafanas_layout():
    files = provisioning.files()
    assert sorted(files) == [
        "alerting/tsdemo-rules.yaml", "dashboards/tsdemo-device.json", "dashboards/tsdemo-fleet.json",
        "dashboards/tsdemo-pipeline.json", "dashboards/tsdemo-provider.yaml", "datasources/tsdemo-influxdb.yaml",
    ]
    names = [name.rsplit("/", 1)[1] for name in files]
    assert len(names) == len(set(names))  # one flat ConfigMap can hold them all
    (provider,) = yaml.safe_load(files["dashboards/tsdemo-provider.yaml"])["providers"]
    # By title only, like the alert rules' file can: one folder for both (see provisioning.py).
    assert (provider["folder"], "folderUid" in provider) == (FOLDER_TITLE, False)
    (group,) = yaml.safe_load(files["alerting/tsdemo-rules.yaml"])["groups"]
    assert group["folder"] == FOLDER_TITLE
    assert provider["options"]["path"] == "${GF_PATHS_PROVISIONING}/dashboards"
    (source,) = yaml.safe_load(files["datasources/tsdemo-influxdb.yaml"])["datasources"]
    assert source["url"] == "${TSDEMO_INFLUX_URL}"
    for name, content in files.items():
        if name.endswith(".json"):
            assert json.loads(content)["uid"] == name.rsplit("/", 1)[1].removesuffix(".json")


def test_generate_writes_the_tree_and_check_finds_every_difference(tmp_path, capsys):
    assert _cli("generate", "--out", str(tmp_path)) == 0
    assert _cli("generate", "--out", str(tmp_path), "--check") == 0
    for name, content in provisioning.files().items():
        assert (tmp_path / name).read_text() == content

    (tmp_path / "dashboards" / "tsdemo-fleet.json").write_text("{}\n")
    (tmp_path / "alerting" / "tsdemo-rules.yaml").unlink()
    (tmp_path / "datasources" / "old.yaml").write_text("apiVersion: 1\n")
    capsys.readouterr()
    assert _cli("generate", "--out", str(tmp_path), "--check") == 1
    err = capsys.readouterr().err
    assert "tsdemo-fleet.json (differs)" in err
    assert "tsdemo-rules.yaml (missing)" in err
    assert "old.yaml (not generated)" in err


def _deployment_files() -> list[Path]:
    """YAML under deploy/ that puts something into Grafana's provisioning directory."""
    found = []
    for path in sorted((REPO / "deploy").rglob("*.y*ml")):
        text = path.read_text(errors="replace")
        if GRAFANA_PROVISIONING in text or "dashboards/provisioning" in text:
            found.append(path)
    return found


def _mount_sources(path: Path) -> list[tuple[str, Path]]:
    """(what, resolved source) for each compose volume, kustomize file and ConfigMap entry into provisioning."""
    sources = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not isinstance(doc, dict):
            continue
        for service, spec in (doc.get("services") or {}).items():
            for volume in spec.get("volumes") or []:
                source, _, target = (volume if isinstance(volume, str) else
                                     f"{volume.get('source')}:{volume.get('target')}").partition(":")
                if target.split(":")[0].startswith(GRAFANA_PROVISIONING):
                    sources.append((f"compose service {service}", (path.parent / source).resolve()))
        for generator in doc.get("configMapGenerator") or []:
            for entry in generator.get("files") or []:
                source = entry.split("=", 1)[-1]
                if "provisioning" in source:
                    sources.append((f"configMapGenerator {generator.get('name')}", (path.parent / source).resolve()))
    return sources


def _configmap_entries(path: Path) -> list[tuple[str, str]]:
    entries = []
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            entries += list((doc.get("data") or {}).items())
    return entries


def test_deployments_mount_exactly_the_generated_tree():
    deployments = _deployment_files()
    if not deployments:
        pytest.skip("no deployment under deploy/ mounts Grafana's provisioning directory yet")
    generated = {name.rsplit("/", 1)[1]: content for name, content in provisioning.files().items()}
    committed = COMMITTED.resolve()
    checked = 0
    for path in deployments:
        files = set()
        for what, source in _mount_sources(path):
            assert source == committed or committed in source.parents, f"{path}: {what} mounts {source}"
            assert source.exists(), f"{path}: {what} mounts {source}, which does not exist"
            if source != committed:
                files.add(str(source.relative_to(committed)))
            checked += 1
        if files:  # file by file (a kustomization): all of them, nothing else
            assert files == set(provisioning.files()), f"{path}: {sorted(files ^ set(provisioning.files()))}"
        for key, content in _configmap_entries(path):
            if key in generated:
                assert content == generated[key], f"{path}: ConfigMap entry {key} is not the generated file"
                checked += 1
    assert checked, f"{[str(p) for p in deployments]} mention Grafana's provisioning but mount nothing we recognise"


def test_tsdemo_dashboards_generate_check_passes_on_the_committed_tree(capsys):
    from deploy.cli import main

    assert main(["dashboards", "generate", "--check"]) == 0
    assert "is up to date" in capsys.readouterr().out


# -- tsdemo dashboards provision, against recorded exchanges ------------------------------------------


@pytest.fixture
def grafana(request) -> Iterator[tuple[Replay, str]]:
    name, _, token = request.param.partition("+token:")
    replay = Replay(name, f"Bearer {token}") if token else Replay(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(replay))
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


def _provision(grafana: tuple[Replay, str]) -> tuple[list[str], list[str]]:
    """One quiet ``provision`` against the replayed Grafana, checked against the whole recording; the
    actions it reports and the writes it sent."""
    replay, url = grafana
    actions = provision(_settings(url), say=lambda _line: None)
    replay.check_complete()
    return actions, _writes(replay)


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
    actions, writes = _provision(grafana)
    assert writes == []
    assert all(a.endswith("is up to date") for a in actions), actions


@pytest.mark.parametrize("grafana", ["drifted"], indirect=True)
def test_changed_objects_are_updated_and_only_those(grafana):
    assert _provision(grafana)[1] == [
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
    actions, writes = _provision(grafana)
    assert writes == []
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
