"""The committed provisioning tree is what the code generates, and the deployments mount exactly it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from dashboards import cli, provisioning
from dashboards.conventions import FOLDER_TITLE
from dashboards.settings import COMMITTED

REPO = Path(__file__).resolve().parents[2]
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
