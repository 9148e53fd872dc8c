"""deploy/images/build_settings.py: the machine's pip settings carried into the image builds."""

from __future__ import annotations

import configparser
import importlib.util
import os
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[4] / "deploy" / "images" / "build_settings.py"
spec = importlib.util.spec_from_file_location("build_settings", SCRIPT)
build_settings = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_settings)


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pip configuration of its own: a file with a CA bundle and find-links, plus PIP_* variables."""
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\ncert = {ca}\nfind-links = {tmp_path}/wheels\ntimeout = 60\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.invalid/simple")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "180")
    return ca


def test_settings_are_carried_with_the_ca_bundle_copied_and_local_paths_left_out(machine, tmp_path):
    out = tmp_path / "out"
    notes = build_settings.write(out)
    conf = configparser.ConfigParser()
    conf.read(out / "pip.conf")
    carried = dict(conf["global"])
    assert carried["cert"] == "/etc/tsdemo-build/cert.pem"
    assert (out / "cert.pem").read_text() == machine.read_text()
    assert carried["index-url"] == "https://mirror.invalid/simple"
    assert carried["default-timeout"] == "180" and carried["timeout"] == "60"
    # Paths of this machine mean nothing in a build: neither the links folder nor PIP_CONFIG_FILE itself.
    assert "find-links" not in carried and "config-file" not in carried, carried
    assert any("find-links" in n for n in notes), notes


def test_no_settings_no_files(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip then reads no configuration file at all
    out = tmp_path / "out"
    build_settings.write(out)
    conf = configparser.ConfigParser()
    conf.read(out / "pip.conf")
    assert dict(conf["global"]) == {}
    assert sorted(p.name for p in out.iterdir()) == ["pip.conf"]
