"""Finding a Grafana server for ``tsdemo up`` and the command that runs it on the provisioning tree."""

from __future__ import annotations

from pathlib import Path

from dashboards import local
from dashboards.settings import COMMITTED


def _fake_install(root: Path, name: str) -> Path:
    """A release-tarball layout: <home>/bin/<name> and <home>/conf/defaults.ini."""
    (root / "bin").mkdir(parents=True)
    (root / "conf").mkdir()
    (root / "conf" / "defaults.ini").write_text("[server]\n")
    binary = root / "bin" / name
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return binary


def test_grafana_on_path_is_found_with_its_home(tmp_path):
    binary = _fake_install(tmp_path / "grafana-11.2.0", "grafana")
    found = local.find_grafana(path=str(binary.parent))
    assert found == local.GrafanaInstall(binary, (tmp_path / "grafana-11.2.0").resolve(), legacy=False)


def test_the_older_grafana_server_binary_is_found_too(tmp_path):
    binary = _fake_install(tmp_path / "grafana-9.3.0", "grafana-server")
    found = local.find_grafana(path=str(binary.parent))
    assert found is not None and found.legacy


def test_nothing_found_without_grafana_on_path(tmp_path):
    (tmp_path / "bin").mkdir()
    assert local.find_grafana(path=str(tmp_path / "bin")) is None


def test_a_binary_without_a_home_is_not_usable(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "_HOMES", ())
    (tmp_path / "bin").mkdir()
    binary = tmp_path / "bin" / "grafana"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert local.find_grafana(path=str(tmp_path / "bin")) is None


def test_the_command_runs_grafana_on_the_committed_tree_with_state_in_the_stack(tmp_path):
    install = local.GrafanaInstall(Path("/opt/grafana/bin/grafana"), Path("/opt/grafana"), legacy=False)
    argv, env = local.grafana_command(install, tmp_path / "grafana", port=3300,
                                      influx_url="http://127.0.0.1:8086", influx_database="iot")
    assert argv == ["/opt/grafana/bin/grafana", "server", "--homepath", "/opt/grafana"]
    assert env["GF_PATHS_PROVISIONING"] == str(COMMITTED)
    assert env["GF_PATHS_DATA"] == str((tmp_path / "grafana" / "data").resolve())
    assert env["GF_SERVER_HTTP_PORT"] == "3300"
    assert (env["TSDEMO_INFLUX_URL"], env["TSDEMO_INFLUX_DATABASE"]) == ("http://127.0.0.1:8086", "iot")
    assert Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).is_file()
    assert all(isinstance(v, str) for v in env.values())
    legacy = local.GrafanaInstall(Path("/usr/sbin/grafana-server"), Path("/usr/share/grafana"), legacy=True)
    assert local.grafana_command(legacy, tmp_path)[0] == ["/usr/sbin/grafana-server", "--homepath",
                                                          "/usr/share/grafana"]
    assert local.health_url(3300) == "http://127.0.0.1:3300/api/health"


def test_the_message_says_how_to_get_grafana():
    message = local.missing_message(3000)
    assert "no Grafana server on PATH" in message
    assert "apt.grafana.com" in message and "grafana.com/grafana/download" in message
    assert "dashboards/provisioning:/etc/grafana/provisioning" in message
    assert "tsdemo dashboards provision" in message

